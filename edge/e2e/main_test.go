package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// binDirPrefix, followed by the process id, names the temporary directory
// of the binaries TestMain builds.
const binDirPrefix = "carbide-e2e-"

// bins are the binaries TestMain builds from the workspace.
var bins struct {
	api, dhcp, pxe, scout, pgCluster, bmc string
}

func TestMain(m *testing.M) {
	os.Exit(testMain(m))
}

func testMain(m *testing.M) int {
	sweepStale()
	dir, err := os.MkdirTemp("", binDirPrefix+strconv.Itoa(os.Getpid())+"-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	bins.api = filepath.Join(dir, "carbide-api")
	bins.dhcp = filepath.Join(dir, "carbide-dhcp")
	bins.pxe = filepath.Join(dir, "carbide-pxe")
	bins.scout = filepath.Join(dir, "carbide-scout-process")
	bins.pgCluster = filepath.Join(dir, "pgtest-cluster")
	bins.bmc = filepath.Join(dir, "carbide-bmc")
	if err := buildAll(map[string]string{
		bins.api:       "github.com/carbide-dev/carbide/backend/cmd/carbide-api",
		bins.dhcp:      "github.com/carbide-dev/carbide/edge/cmd/carbide-dhcp",
		bins.pxe:       "github.com/carbide-dev/carbide/edge/cmd/carbide-pxe",
		bins.scout:     "github.com/carbide-dev/carbide/edge/cmd/carbide-scout",
		bins.pgCluster: "github.com/carbide-dev/carbide/backend/pgtest/cmd/pgtest-cluster",
		bins.bmc:       "github.com/carbide-dev/carbide/edge/cmd/carbide-bmc",
	}); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return m.Run()
}

// buildAll builds each package into its output path, at once. The
// packages of the backend module build only inside the go.work workspace.
func buildAll(outputs map[string]string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	var wg sync.WaitGroup
	var mu sync.Mutex
	var errs []string
	for out, pkg := range outputs {
		wg.Go(func() {
			b, err := exec.CommandContext(ctx, "go", "build", "-o", out, pkg).CombinedOutput()
			if err != nil {
				mu.Lock()
				errs = append(errs, fmt.Sprintf("go build %s: %v\n%s", pkg, err, b))
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if len(errs) > 0 {
		return fmt.Errorf("%s\n(the e2e tests build binaries of several modules: run them inside the go.work workspace, without GOWORK=off)",
			strings.Join(errs, "\n"))
	}
	return nil
}

// requireRoot fails the test unless it may create network namespaces.
func requireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("the DHCP end-to-end tests create network namespaces and veth links: run them as root (sudo -E go test ./edge/e2e/)")
	}
}

// packages names the Debian package of each program the tests run.
var packages = map[string]string{
	"ip":       "iproute2",
	"dhclient": "isc-dhcp-client",
	"dhcrelay": "isc-dhcp-relay",
	"busybox":  "busybox-static",
	"dnsmasq":  "dnsmasq-base",
	"perfdhcp": "kea-admin",
	"psql":     "postgresql-client",
	"haproxy":  "haproxy",
	"setpriv":  "util-linux",

	"qemu-system-x86_64": "qemu-system-x86 ipxe-qemu",
	"radvd":              "radvd",

	"losetup":  "mount",
	"sfdisk":   "fdisk",
	"blkid":    "util-linux",
	"wipefs":   "util-linux",
	"mkfs.fat": "dosfstools",
	"mcopy":    "mtools",
}

// findProgram returns the absolute path of a program: on PATH, or in the
// sbin and bin directories, where Debian puts dhclient, dhcrelay and
// perfdhcp and which a non-login PATH may lack.
func findProgram(name string) (string, error) {
	path, err := exec.LookPath(name)
	if err == nil {
		return filepath.Abs(path)
	}
	for _, dir := range []string{"/usr/sbin", "/sbin", "/usr/bin", "/bin"} {
		p := filepath.Join(dir, name)
		if fi, serr := os.Stat(p); serr == nil && !fi.IsDir() && fi.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", err
}

// lookPaths returns the absolute path of each program, and fails the test
// with the packages to install when one is missing.
func lookPaths(t testing.TB, programs ...string) map[string]string {
	t.Helper()
	paths := map[string]string{}
	var missing []string
	for _, p := range programs {
		path, err := findProgram(p)
		if err != nil {
			missing = append(missing, fmt.Sprintf("%s (apt-get install %s)", p, packages[p]))
			continue
		}
		paths[p] = path
	}
	if len(missing) > 0 {
		t.Fatalf("programs this test runs are not installed: %s", strings.Join(missing, ", "))
	}
	return paths
}
