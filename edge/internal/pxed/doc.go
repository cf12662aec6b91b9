// Package pxed is Carbide's PXE daemon: a stateless edge process that
// serves network boot on behalf of the Carbide API, which decides what
// every machine boots (carbide.boot.v1.BootService.GetBootConfig). Any
// number of replicas give the same answers, because none of them keeps
// state.
//
// # TFTP
//
// [TFTPHandler] serves the regular files under --tftp-root (the iPXE
// binaries: undionly.kpxe, snponly.efi, ipxe.efi), read-only: a write
// request gets an error packet. It honours the block size (blksize, RFC
// 2348) and transfer size (tsize, RFC 2349) options. File names are
// resolved in an [os.Root], so an absolute name, a ".." element or a
// symbolic link that leads out of the root is refused; so is anything
// that is not a regular file.
//
// # HTTP
//
// [HTTPHandler] serves:
//
//   - GET /ipxe/{mac}: the machine's iPXE script. It calls GetBootConfig
//     with the MAC, the request's IPv4 source address and start_boot, and
//     renders the discovery image (kernel and initrd, with carbide.config
//     and carbide.mac on the kernel command line; carbide.config carries
//     the new boot's nonce as ?boot=, when the API started one because
//     the request came from the MAC's leased address), an exit to the next boot
//     device for BOOT_ACTION_LOCAL_DISK, the instance's netboot image for
//     BOOT_ACTION_NETBOOT (its kernel, initrd and command line, with
//     ds=nocloud-net;s=<base>/cloud-init/<mac>/), or, for a MAC no machine
//     has, a script that waits --retry-interval and asks again. When the API
//     fails the answer is 503 with Retry-After, never a partial script.
//   - GET /agent/{mac}.json?boot={nonce}: the discovery agent's
//     configuration ([agentconfig.Config]) with the agent token the API
//     issues in exchange for the nonce of the machine's current boot, once,
//     only to the address that holds the MAC's lease. 403 without a nonce
//     or when the API withheld the token, 409 when the machine is not
//     being discovered. The query string (the nonce) is never logged.
//   - GET /artifacts/{path}: the files under --artifacts-dir (kernels,
//     initrds), with Range requests, confined like TFTP; no listings.
//   - GET /cloud-init/{mac}/{meta-data,user-data,network-config,vendor-data}:
//     a NoCloud seed. GetBootConfig with cloud_init and the request's IPv4
//     source address returns the instance's cloud-init data only to the
//     MAC's leased address: then the seed is the instance's (its id, host
//     name and SSH keys, the tenant's user data verbatim, network config
//     version 2, and a phone_home vendor-data while it is provisioned);
//     otherwise the machine's ID and host name, and no network-config.
//   - POST /phone-home/{mac}: cloud-init's phone_home post (instance_id,
//     hostname; at most 8 KiB), passed to BootService.PhoneHome with the
//     request's IPv4 source address.
//
// MACs in paths may be colon- or hyphen-separated, in either case; the
// daemon uses the lower-case colon form. Every value placed into a script
// or a seed (MAC, machine ID, host name, URLs, kernel arguments,
// addresses) is checked against a strict alphabet first: a value outside
// it fails the request with 500 and a log line rather than being escaped,
// so no host name or label can add an iPXE command or a YAML key. SSH key
// comments are the exception: any character but a line break or NUL,
// escaped into a YAML double-quoted string.
//
// # Metrics
//
// On --metrics-listen (127.0.0.1:9168; /metrics, and /healthz):
// carbide_pxe_http_requests_total{route,code},
// carbide_pxe_http_request_seconds{route},
// carbide_pxe_http_response_bytes_total{route},
// carbide_pxe_scripts_total{action},
// carbide_pxe_api_errors_total{code}, carbide_pxe_tftp_transfers_total{result},
// carbide_pxe_tftp_bytes_total, carbide_pxe_tftp_transfer_seconds,
// carbide_pxe_http_timeouts_total{timeout} and
// carbide_metrics_http_timeouts_total{timeout}.
//
// # Limits
//
// At most --tftp-max-transfers TFTP transfers run at once; a request
// beyond them gets an error packet (result busy). An HTTP response may go
// --http-write-timeout without progress: the write deadline moves on
// before each write and each MiB of an artifact, so a large initrd on a
// slow link completes while a client that stops reading is cut off. Idle
// connections close after --http-idle-timeout.
//
// # Testing
//
// The API is reached through the small [BootAPI] interface; the tests
// drive it with a fake BootService served over HTTP, and the TFTP server
// with pin/tftp's client.
package pxed
