#!/usr/bin/env bash
# End to end with the carbide CLI alone: a segment, a machine registered by
# MAC, an OS image, and an instance that goes to Running and is released
# again. There is no real machine: the script plays the machine's side with
# the calls the daemons make (carbide agent, carbide dhcp, carbide boot),
# each with the certificate of its role.
#
# Environment: CARBIDE (the CLI), CARBIDE_API (carbide-api, for dev-cert),
# DATA_DIR (the API's --data-dir), ENDPOINT, CARBIDE_CONFIG (a new file).
set -euo pipefail

tmp=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$tmp"' EXIT
pki=$DATA_DIR/pki

c() { "$CARBIDE" "$@"; }
fail() { echo "FAIL: $*" >&2; exit 1; }
# expect_exit CODE ARGS...: run the CLI, which must exit with CODE.
expect_exit() {
	local want=$1 got=0
	shift
	"$CARBIDE" "$@" >"$tmp/out" 2>"$tmp/err" || got=$?
	[[ $got == "$want" ]] || fail "carbide $* exited $got, want $want: $(cat "$tmp/err")"
}
# json_field NAME: the first "NAME": "value" of the JSON on stdin.
json_field() { sed -n "s/^  \"$1\": \"\(.*\)\",\{0,1\}\$/\1/p" | head -n1; }

echo "== config"
c config set-context lab --endpoint "$ENDPOINT" --ca-cert "$pki/ca.crt" \
	--client-cert "$pki/admin.crt" --client-key "$pki/admin.key"
[[ $(c config current-context) == lab ]] || fail "current context is not lab"

echo "== segment"
c segment create --name rack1 --prefix 10.0.1.0/24 --gateway 10.0.1.1 --range 10.0.1.100-10.0.1.200
c segment get rack1 -o json | grep -q '"prefix": "10.0.1.0/24"' || fail "segment rack1 reads back wrong"
expect_exit 4 segment create --name rack1 --prefix 10.0.2.0/24

echo "== machine"
c machine create --hostname node1 --mac 52:54:00:00:00:01 --label rack=r1
machine=$(c machine get node1 -o json | json_field id)
[[ -n $machine ]] || fail "no id for node1"
c machine list --state discovered --label rack=r1 | grep -q node1 || fail "node1 is not listed as discovered"

# The machine's discovery agent, with the agent certificate of the machine,
# reports its hardware: the machine becomes Ready.
"$CARBIDE_API" dev-cert --data-dir "$DATA_DIR" --agent "$machine" --out "$tmp" >/dev/null
agent=(--client-cert "$tmp/agent-$machine.crt" --client-key "$tmp/agent-$machine.key")
cat >"$tmp/inventory.yaml" <<YAML
inventory:
  system: {manufacturer: QEMU, serial: SN-1}
  cpu: {model: qemu64, sockets: 1, cores: 2, threads: 2}
  memoryBytes: "4294967296"
  disks: [{name: vda, sizeBytes: "21474836480"}]
  nics: [{mac: "52:54:00:00:00:01", linkUp: true}]
YAML
c agent report-inventory "$machine" "${agent[@]}" -f "$tmp/inventory.yaml" >/dev/null
c machine wait node1 --state ready --timeout 30s | grep -q ready || fail "node1 is not ready"

echo "== image"
c image create --name debian --version 12 --architecture amd64 --firmware uefi \
	--disk-format raw --disk-file-url http://127.0.0.1:1/debian-12.raw --disk-file-sha256 "$(printf '0%.0s' {1..64})"
c image get debian:12 -o yaml | grep -q 'version: "12"' || fail "image debian:12 reads back wrong"

# agent_step ACTION: report the inventory and ask for the instruction until
# it is ACTION, as the agent does when the machine boots.
agent_step() {
	for _ in $(seq 60); do
		c agent report-inventory "$machine" "${agent[@]}" -f "$tmp/inventory.yaml" >/dev/null
		if c agent get-instruction "$machine" "${agent[@]}" -o json | grep -q "\"ACTION_$1\""; then
			return 0
		fi
		sleep 0.5
	done
	fail "the agent got no $1 instruction"
}

echo "== instance create --wait"
c instance create --hostname web1 --image-id debian:12 --selector-label rack=r1 --wait --timeout 60s \
	>"$tmp/create.out" 2>"$tmp/create.err" &
create=$!
agent_step INSTALL
c agent complete-step "$machine" "${agent[@]}" --step write_image --bytes 1048576 --duration 2s >/dev/null
# DHCP gives the machine an address; cloud-init phones home from it.
c dhcp lease --mac 52:54:00:00:00:01 --origin-local-address 10.0.1.1 \
	--client-cert "$pki/dhcp.crt" --client-key "$pki/dhcp.key" -o json >"$tmp/lease.json"
address=$(json_field address <"$tmp/lease.json")
instance=$(c instance get web1 -o json | json_field id)
c boot phone-home --mac 52:54:00:00:00:01 --client-address "$address" --instance-id "$instance" \
	--client-cert "$pki/pxe.crt" --client-key "$pki/pxe.key"
wait "$create" || fail "instance create --wait exited $?: $(cat "$tmp/create.err")"
cat "$tmp/create.out" "$tmp/create.err"
grep -q 'web1 .* running' "$tmp/create.out" || fail "instance create --wait did not print web1 running"
grep -q 'instance web1: provisioning: write_image' "$tmp/create.err" || fail "no progress of the write_image step"
c instance get web1 -o json | grep -q '"state": "INSTANCE_STATE_RUNNING"' || fail "web1 is not running"
c machine get node1 | grep -q assigned || fail "node1 is not assigned"

echo "== instance delete --wait"
c instance delete web1 --wait --timeout 60s >"$tmp/delete.out" 2>"$tmp/delete.err" &
del=$!
agent_step WIPE
c agent complete-step "$machine" "${agent[@]}" --step wipe >/dev/null
wait "$del" || fail "instance delete --wait exited $?: $(cat "$tmp/delete.err")"
cat "$tmp/delete.out" "$tmp/delete.err"
grep -q 'instance web1: releasing: wipe' "$tmp/delete.err" || fail "no progress of the wipe step"
c instance get web1 | grep -q released || fail "web1 is not released"
c machine wait node1 --state ready --timeout 30s >/dev/null

echo "== read back"
c segment list
c machine list -o wide
c image list
c instance list
c machine list-transitions node1
echo "OK"
