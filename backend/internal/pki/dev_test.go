package pki_test

import (
	"crypto/x509"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/carbide-dev/carbide/backend/internal/pki"
	"github.com/carbide-dev/carbide/backend/internal/principal"
)

// allDevFiles is every file EnsureDev writes, in the order it writes them.
var allDevFiles = []string{
	"ca.key", "ca.crt", "server.key", "server.crt",
	"admin.key", "admin.crt", "operator.key", "operator.crt", "viewer.key", "viewer.crt",
	"dhcp.key", "dhcp.crt", "pxe.key", "pxe.crt", "dns.key", "dns.crt", "bmc.key", "bmc.crt",
}

// snapshot returns the content and modification time of every file in dir.
func snapshot(t *testing.T, dir string) map[string]string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	snap := map[string]string{}
	for _, e := range entries {
		fi, err := e.Info()
		if err != nil {
			t.Fatal(err)
		}
		snap[e.Name()] = fi.ModTime().String() + "\n" + string(readFile(t, dir, e.Name()))
	}
	return snap
}

func TestEnsureDevCreates(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "data", "pki")
	hosts := []string{"api.test", "127.0.0.1"}
	created, err := pki.EnsureDev(dir, "dev.test", hosts)
	if err != nil {
		t.Fatalf("EnsureDev: %v", err)
	}
	if diff := cmp.Diff(allDevFiles, created); diff != "" {
		t.Errorf("created (-want +got):\n%s", diff)
	}

	fi, err := os.Stat(dir)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o700 {
		t.Errorf("dir mode %v, want 0700", fi.Mode().Perm())
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	want := slices.Clone(allDevFiles)
	slices.Sort(want)
	if diff := cmp.Diff(want, names); diff != "" {
		t.Errorf("files in dir (-want +got), no temporary files may remain:\n%s", diff)
	}

	ca, err := pki.LoadCA(filepath.Join(dir, "ca.crt"), filepath.Join(dir, "ca.key"))
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(ca.Cert)

	type wantFile struct {
		mode os.FileMode
		// principal is the identity of a client certificate; nil otherwise.
		principal *principal.Principal
	}
	user := func(r principal.Role) *principal.Principal {
		return &principal.Principal{Name: "spiffe://dev.test/user/" + string(r) + "/bootstrap", Roles: []principal.Role{r}, Method: principal.MethodCertificate}
	}
	service := func(r principal.Role) *principal.Principal {
		return &principal.Principal{Name: "spiffe://dev.test/service/" + string(r), Roles: []principal.Role{r}, Method: principal.MethodCertificate}
	}
	files := map[string]wantFile{
		"ca.crt": {mode: 0o644}, "ca.key": {mode: 0o600},
		"server.crt": {mode: 0o644}, "server.key": {mode: 0o600},
	}
	for _, r := range principal.UserRoles {
		files[string(r)+".crt"] = wantFile{mode: 0o644, principal: user(r)}
		files[string(r)+".key"] = wantFile{mode: 0o600}
	}
	for _, r := range principal.ServiceRoles {
		files[string(r)+".crt"] = wantFile{mode: 0o644, principal: service(r)}
		files[string(r)+".key"] = wantFile{mode: 0o600}
	}
	for name, w := range files {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			fi, err := os.Stat(filepath.Join(dir, name))
			if err != nil {
				t.Fatal(err)
			}
			if fi.Mode().Perm() != w.mode {
				t.Errorf("mode %v, want %v", fi.Mode().Perm(), w.mode)
			}
			data := readFile(t, dir, name)
			if strings.HasSuffix(name, ".key") {
				cert := parseCertPEM(t, readFile(t, dir, strings.TrimSuffix(name, ".key")+".crt"))
				if name != "ca.key" {
					checkLeafKey(t, cert, data)
				}
				return
			}
			cert := parseCertPEM(t, data)
			switch {
			case name == "ca.crt":
				if !cert.Equal(ca.Cert) {
					t.Error("ca.crt differs from the loaded CA")
				}
			case name == "server.crt":
				for _, h := range hosts {
					opts := x509.VerifyOptions{Roots: roots, DNSName: h, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
					if _, err := cert.Verify(opts); err != nil {
						t.Errorf("server.crt for %s: %v", h, err)
					}
				}
			default:
				opts := x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
				if _, err := cert.Verify(opts); err != nil {
					t.Errorf("verify: %v", err)
				}
				p, err := pki.PrincipalFromCert("dev.test", cert)
				if err != nil {
					t.Fatalf("PrincipalFromCert: %v", err)
				}
				if diff := cmp.Diff(w.principal, p); diff != "" {
					t.Errorf("principal (-want +got):\n%s", diff)
				}
			}
		})
	}
}

func TestEnsureDevIdempotent(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	if _, err := pki.EnsureDev(dir, "", nil); err != nil {
		t.Fatal(err)
	}
	before := snapshot(t, dir)
	// Hosts already covered, in another order, must not re-issue.
	for _, hosts := range [][]string{nil, {"::1", "localhost"}} {
		created, err := pki.EnsureDev(dir, "", hosts)
		if err != nil {
			t.Fatalf("second EnsureDev: %v", err)
		}
		if len(created) != 0 {
			t.Errorf("second EnsureDev(%v) created %v, want nothing", hosts, created)
		}
	}
	if diff := cmp.Diff(before, snapshot(t, dir)); diff != "" {
		t.Errorf("files changed (-before +after):\n%s", diff)
	}
}

func TestEnsureDevReissues(t *testing.T) {
	t.Parallel()
	tests := map[string]struct {
		// change damages a fresh dev PKI in dir, signed by ca.
		change func(t *testing.T, dir string, ca *pki.CA)
		hosts  []string
		want   []string
	}{
		"server cert expiring within 30 days": {
			change: func(t *testing.T, dir string, ca *pki.CA) {
				certPEM, keyPEM, err := ca.IssueServer([]string{"localhost", "127.0.0.1", "::1"}, 10*24*time.Hour)
				if err != nil {
					t.Fatal(err)
				}
				writeFile(t, dir, "server.key", keyPEM, 0o600)
				writeFile(t, dir, "server.crt", certPEM, 0o644)
			},
			want: []string{"server.key", "server.crt"},
		},
		"server cert missing a host": {
			hosts: []string{"localhost", "api.example.test"},
			want:  []string{"server.key", "server.crt"},
		},
		"server key missing": {
			change: func(t *testing.T, dir string, _ *pki.CA) { remove(t, dir, "server.key") },
			want:   []string{"server.key", "server.crt"},
		},
		"server key of another pair": {
			change: func(t *testing.T, dir string, _ *pki.CA) {
				writeFile(t, dir, "server.key", readFile(t, dir, "dhcp.key"), 0o600)
			},
			want: []string{"server.key", "server.crt"},
		},
		"client cert expiring within 30 days": {
			change: func(t *testing.T, dir string, ca *pki.CA) {
				certPEM, keyPEM, err := ca.IssueClient(pki.ServiceID("", principal.RolePXE), 24*time.Hour)
				if err != nil {
					t.Fatal(err)
				}
				writeFile(t, dir, "pxe.key", keyPEM, 0o600)
				writeFile(t, dir, "pxe.crt", certPEM, 0o644)
			},
			want: []string{"pxe.key", "pxe.crt"},
		},
		"client cert from another CA": {
			change: func(t *testing.T, dir string, _ *pki.CA) {
				other := newCA(t, time.Hour*24*365)
				certPEM, keyPEM, err := other.IssueClient(pki.ServiceID("", principal.RoleDHCP), 24*365*time.Hour)
				if err != nil {
					t.Fatal(err)
				}
				writeFile(t, dir, "dhcp.key", keyPEM, 0o600)
				writeFile(t, dir, "dhcp.crt", certPEM, 0o644)
			},
			want: []string{"dhcp.key", "dhcp.crt"},
		},
		"client cert with the wrong identity": {
			change: func(t *testing.T, dir string, _ *pki.CA) {
				writeFile(t, dir, "viewer.key", readFile(t, dir, "admin.key"), 0o600)
				writeFile(t, dir, "viewer.crt", readFile(t, dir, "admin.crt"), 0o644)
			},
			want: []string{"viewer.key", "viewer.crt"},
		},
		"client cert garbage": {
			change: func(t *testing.T, dir string, _ *pki.CA) { writeFile(t, dir, "bmc.crt", []byte("junk"), 0o644) },
			want:   []string{"bmc.key", "bmc.crt"},
		},
		"new CA re-issues every leaf": {
			change: func(t *testing.T, dir string, _ *pki.CA) {
				remove(t, dir, "ca.crt")
				remove(t, dir, "ca.key")
			},
			want: allDevFiles,
		},
		"loose key mode is tightened, not re-issued": {
			change: func(t *testing.T, dir string, _ *pki.CA) {
				if err := os.Chmod(filepath.Join(dir, "admin.key"), 0o644); err != nil {
					t.Fatal(err)
				}
				if err := os.Chmod(dir, 0o755); err != nil {
					t.Fatal(err)
				}
			},
		},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			if _, err := pki.EnsureDev(dir, "", nil); err != nil {
				t.Fatal(err)
			}
			ca, err := pki.LoadCA(filepath.Join(dir, "ca.crt"), filepath.Join(dir, "ca.key"))
			if err != nil {
				t.Fatal(err)
			}
			if tt.change != nil {
				tt.change(t, dir, ca)
			}
			before := snapshot(t, dir)
			created, err := pki.EnsureDev(dir, "", tt.hosts)
			if err != nil {
				t.Fatalf("EnsureDev: %v", err)
			}
			if diff := cmp.Diff(tt.want, created); diff != "" {
				t.Errorf("created (-want +got):\n%s", diff)
			}
			after := snapshot(t, dir)
			for name := range after {
				if !slices.Contains(created, name) && before[name] != after[name] {
					t.Errorf("%s changed but was not reported as created", name)
				}
				if slices.Contains(created, name) && before[name] == after[name] {
					t.Errorf("%s reported as created but unchanged", name)
				}
			}
			for _, name := range []string{".", "admin.key", "server.key", "dhcp.key"} {
				fi, err := os.Stat(filepath.Join(dir, name))
				if err != nil {
					t.Fatal(err)
				}
				want := os.FileMode(0o600)
				if name == "." {
					want = 0o700
				}
				if fi.Mode().Perm() != want {
					t.Errorf("%s mode %v, want %v", name, fi.Mode().Perm(), want)
				}
			}
			// The result is stable: a further call writes nothing.
			if again, err := pki.EnsureDev(dir, "", tt.hosts); err != nil || len(again) != 0 {
				t.Errorf("third EnsureDev = %v, %v; want nothing created", again, err)
			}
			if name == "server cert expiring within 30 days" {
				cert := parseCertPEM(t, readFile(t, dir, "server.crt"))
				if time.Until(cert.NotAfter) < 300*24*time.Hour {
					t.Errorf("re-issued server.crt expires at %v, want about a year from now", cert.NotAfter)
				}
			}
		})
	}
}

func TestEnsureDevRejects(t *testing.T) {
	t.Parallel()
	tests := map[string]struct {
		// setup prepares dir (which exists) and returns the dir to pass.
		setup   func(t *testing.T, dir string) string
		td      string
		wantErr string
		// keep lists files that must survive untouched.
		keep []string
	}{
		"only ca.key": {
			setup: func(t *testing.T, dir string) string {
				remove(t, dir, "ca.crt")
				return dir
			},
			wantErr: "ca.key exists but ca.crt does not",
			keep:    []string{"ca.key"},
		},
		"only ca.crt": {
			setup: func(t *testing.T, dir string) string {
				remove(t, dir, "ca.key")
				return dir
			},
			wantErr: "ca.crt exists but ca.key does not",
			keep:    []string{"ca.crt"},
		},
		"corrupt ca.crt": {
			setup: func(t *testing.T, dir string) string {
				writeFile(t, dir, "ca.crt", []byte("junk"), 0o644)
				return dir
			},
			wantErr: "remove ca.crt and ca.key",
			keep:    []string{"ca.key"},
		},
		"mismatched CA key": {
			setup: func(t *testing.T, dir string) string {
				writeFile(t, dir, "ca.key", readFile(t, dir, "server.key"), 0o600)
				return dir
			},
			wantErr: "does not match",
			keep:    []string{"ca.crt", "ca.key"},
		},
		"CA expiring soon": {
			setup: func(t *testing.T, dir string) string {
				ca, err := pki.NewCA("short", 24*time.Hour)
				if err != nil {
					t.Fatal(err)
				}
				sub := filepath.Join(dir, "short")
				if err := os.Mkdir(sub, 0o700); err != nil {
					t.Fatal(err)
				}
				writeCA(t, sub, ca)
				return sub
			},
			wantErr: "to create a new CA",
			keep:    []string{"ca.crt", "ca.key"},
		},
		"dir is a file": {
			setup: func(t *testing.T, dir string) string {
				return writeFile(t, dir, "plain", nil, 0o600)
			},
			wantErr: "not a directory",
		},
		"empty dir path": {
			setup:   func(t *testing.T, dir string) string { return "" },
			wantErr: "directory is empty",
		},
		"bad trust domain": {
			setup:   func(t *testing.T, dir string) string { return filepath.Join(dir, "new") },
			td:      "Not Valid",
			wantErr: "trust domain",
		},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			if _, err := pki.EnsureDev(dir, "", nil); err != nil {
				t.Fatal(err)
			}
			target := tt.setup(t, dir)
			before := map[string][]byte{}
			for _, f := range tt.keep {
				before[f] = readFile(t, target, f)
			}
			created, err := pki.EnsureDev(target, tt.td, nil)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("EnsureDev error = %v, want one mentioning %q", err, tt.wantErr)
			}
			if len(created) != 0 {
				t.Errorf("created %v on error, want nothing", created)
			}
			for _, f := range tt.keep {
				if string(readFile(t, target, f)) != string(before[f]) {
					t.Errorf("%s was modified", f)
				}
			}
		})
	}
}

// remove deletes dir/name, failing the test on error.
func remove(t *testing.T, dir, name string) {
	t.Helper()
	if err := os.Remove(filepath.Join(dir, name)); err != nil {
		t.Fatal(err)
	}
}

// writeCA writes ca as ca.crt and ca.key in dir, as EnsureDev would.
func writeCA(t *testing.T, dir string, ca *pki.CA) {
	t.Helper()
	keyDER, err := x509.MarshalPKCS8PrivateKey(ca.Key)
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, dir, "ca.crt", pemBlock("CERTIFICATE", ca.Cert.Raw), 0o644)
	writeFile(t, dir, "ca.key", pemBlock("PRIVATE KEY", keyDER), 0o600)
}
