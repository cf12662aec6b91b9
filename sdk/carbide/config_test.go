package carbide

import (
	"context"
	"crypto/tls"
	"encoding/base64"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// clearConfigEnv unsets every CARBIDE_* variable the loader reads, so the
// test's own environment does not leak in.
func clearConfigEnv(t *testing.T) {
	t.Helper()
	for _, k := range []string{EnvConfig, EnvContext, EnvEndpoint, EnvCACert, EnvClientCert, EnvClientKey, EnvToken, EnvTokenCommand, EnvProtocol} {
		t.Setenv(k, "")
	}
}

func writeFile(t *testing.T, path, content string) string {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

const twoContexts = `current-context: lab
contexts:
  lab:
    endpoint: https://lab.example:1079
    ca-cert: pki/ca.crt
    client-cert: pki/admin.crt
    client-key: /etc/carbide/admin.key
  prod:
    endpoint: https://prod.example:1079
    token-command: echo tok
    protocol: grpc
`

func TestReadConfigFile(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	path := writeFile(t, filepath.Join(dir, "conf", "config.yaml"), twoContexts)
	f, err := ReadConfigFile(path)
	if err != nil {
		t.Fatalf("ReadConfigFile: %v", err)
	}
	want := &ConfigFile{
		CurrentContext: "lab",
		Contexts: map[string]Config{
			"lab": {
				Endpoint:   "https://lab.example:1079",
				CACert:     filepath.Join(dir, "conf", "pki", "ca.crt"),
				ClientCert: filepath.Join(dir, "conf", "pki", "admin.crt"),
				ClientKey:  "/etc/carbide/admin.key",
			},
			"prod": {Endpoint: "https://prod.example:1079", TokenCommand: "echo tok", Protocol: "grpc"},
		},
	}
	if diff := cmp.Diff(want, f); diff != "" {
		t.Errorf("ReadConfigFile (-want +got):\n%s", diff)
	}
}

func TestReadConfigFileMissing(t *testing.T) {
	t.Parallel()
	f, err := ReadConfigFile(filepath.Join(t.TempDir(), "nope", "config.yaml"))
	if err != nil {
		t.Fatalf("ReadConfigFile of a missing file: %v, want no error", err)
	}
	if diff := cmp.Diff(&ConfigFile{}, f); diff != "" {
		t.Errorf("ReadConfigFile of a missing file (-want +got):\n%s", diff)
	}
}

func TestReadConfigFileErrors(t *testing.T) {
	t.Parallel()
	for name, tc := range map[string]struct {
		content, want string
	}{
		"unknown key":    {"contexts:\n  lab:\n    endpont: https://x\n", `unknown field "endpont"`},
		"not yaml":       {"contexts: [\n", "parse config file"},
		"wrong shape":    {"contexts: 3\n", "parse config file"},
		"top-level typo": {"current_context: lab\n", `unknown field "current_context"`},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			path := writeFile(t, filepath.Join(t.TempDir(), "config.yaml"), tc.content)
			_, err := ReadConfigFile(path)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("ReadConfigFile: %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

func TestConfigFileWrite(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	path := filepath.Join(dir, "a", "b", "config.yaml")
	f := &ConfigFile{CurrentContext: "x", Contexts: map[string]Config{
		"x": {Endpoint: "https://x.example:1079", Token: "secret", CACert: "/abs/ca.crt"},
	}}
	if err := f.Write(path); err != nil {
		t.Fatalf("Write: %v", err)
	}
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Errorf("config file mode %v, want 0600", st.Mode().Perm())
	}
	// Overwriting keeps the mode and replaces the content.
	f.CurrentContext = ""
	if err := f.Write(path); err != nil {
		t.Fatalf("second Write: %v", err)
	}
	got, err := ReadConfigFile(path)
	if err != nil {
		t.Fatalf("ReadConfigFile: %v", err)
	}
	if diff := cmp.Diff(f, got); diff != "" {
		t.Errorf("read back (-want +got):\n%s", diff)
	}
	entries, _ := os.ReadDir(filepath.Dir(path))
	if len(entries) != 1 {
		t.Errorf("directory holds %d entries after Write, want only the config file", len(entries))
	}
}

func TestDefaultConfigPath(t *testing.T) {
	clearConfigEnv(t)
	t.Setenv("HOME", "/home/u")
	t.Setenv("XDG_CONFIG_HOME", "")
	if got, want := DefaultConfigPath(), "/home/u/.config/carbide/config.yaml"; got != want {
		t.Errorf("DefaultConfigPath() = %q, want %q", got, want)
	}
	t.Setenv("XDG_CONFIG_HOME", "/xdg")
	if got, want := DefaultConfigPath(), "/xdg/carbide/config.yaml"; got != want {
		t.Errorf("with XDG_CONFIG_HOME: DefaultConfigPath() = %q, want %q", got, want)
	}
	t.Setenv(EnvConfig, "/etc/c.yaml")
	if got, want := DefaultConfigPath(), "/etc/c.yaml"; got != want {
		t.Errorf("with CARBIDE_CONFIG: DefaultConfigPath() = %q, want %q", got, want)
	}
}

func TestLoadConfig(t *testing.T) {
	dir := t.TempDir()
	two := writeFile(t, filepath.Join(dir, "two.yaml"), twoContexts)
	noCurrent := writeFile(t, filepath.Join(dir, "nocurrent.yaml"), strings.Replace(twoContexts, "current-context: lab\n", "", 1))
	one := writeFile(t, filepath.Join(dir, "one.yaml"), "contexts:\n  only:\n    endpoint: https://only.example:1079\n")
	missing := filepath.Join(dir, "missing.yaml")
	lab := Config{
		Endpoint:   "https://lab.example:1079",
		CACert:     filepath.Join(dir, "pki", "ca.crt"),
		ClientCert: filepath.Join(dir, "pki", "admin.crt"),
		ClientKey:  "/etc/carbide/admin.key",
	}
	prod := Config{Endpoint: "https://prod.example:1079", TokenCommand: "echo tok", Protocol: "grpc"}

	for name, tc := range map[string]struct {
		path, context string
		env           map[string]string
		want          Config
		wantErr       []string
	}{
		"current context":    {path: two, want: lab},
		"named context":      {path: two, context: "prod", want: prod},
		"CARBIDE_CONTEXT":    {path: two, env: map[string]string{EnvContext: "prod"}, want: prod},
		"argument beats env": {path: two, context: "lab", env: map[string]string{EnvContext: "prod"}, want: lab},
		"only context":       {path: one, want: Config{Endpoint: "https://only.example:1079"}},
		"no file":            {path: missing, env: map[string]string{EnvEndpoint: "https://env.example:1079"}, want: Config{Endpoint: "https://env.example:1079"}},
		"no file and no env": {path: missing, want: Config{}},
		"env overrides fields": {
			path: two, context: "prod",
			env:  map[string]string{EnvEndpoint: "https://other:1079", EnvToken: "t", EnvProtocol: "connect"},
			want: Config{Endpoint: "https://other:1079", Token: "t", Protocol: "connect"},
		},
		"env paths stay as given": {
			path: two,
			env:  map[string]string{EnvClientCert: "me.crt", EnvClientKey: "me.key"},
			want: Config{Endpoint: lab.Endpoint, CACert: lab.CACert, ClientCert: "me.crt", ClientKey: "me.key"},
		},
		"unknown context":        {path: two, context: "staging", wantErr: []string{`context "staging"`, two, "lab, prod"}},
		"unknown env context":    {path: two, env: map[string]string{EnvContext: "qa"}, wantErr: []string{`context "qa"`, EnvContext}},
		"context without file":   {path: missing, context: "lab", wantErr: []string{`context "lab"`, "no contexts"}},
		"several, none selected": {path: noCurrent, wantErr: []string{"none is selected", "--context", "lab, prod"}},
	} {
		t.Run(name, func(t *testing.T) {
			clearConfigEnv(t)
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			got, err := LoadConfig(tc.path, tc.context)
			if len(tc.wantErr) > 0 {
				if err == nil {
					t.Fatalf("LoadConfig = %+v, want an error", got)
				}
				for _, w := range tc.wantErr {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("LoadConfig error %q does not contain %q", err, w)
					}
				}
				return
			}
			if err != nil {
				t.Fatalf("LoadConfig: %v", err)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("LoadConfig (-want +got):\n%s", diff)
			}
		})
	}
}

func TestMerge(t *testing.T) {
	t.Parallel()
	base := Config{Endpoint: "https://a:1", CACert: "ca", ClientCert: "a.crt", ClientKey: "a.key", TokenCommand: "cmd", Protocol: "grpc"}
	for name, tc := range map[string]struct {
		over, want Config
	}{
		"nothing set":                   {Config{}, base},
		"endpoint":                      {Config{Endpoint: "https://b:2"}, Config{Endpoint: "https://b:2", CACert: "ca", ClientCert: "a.crt", ClientKey: "a.key", TokenCommand: "cmd", Protocol: "grpc"}},
		"token replaces command":        {Config{Token: "t"}, Config{Endpoint: "https://a:1", CACert: "ca", ClientCert: "a.crt", ClientKey: "a.key", Token: "t", Protocol: "grpc"}},
		"command replaces command":      {Config{TokenCommand: "other"}, Config{Endpoint: "https://a:1", CACert: "ca", ClientCert: "a.crt", ClientKey: "a.key", TokenCommand: "other", Protocol: "grpc"}},
		"certificate replaces the pair": {Config{ClientCert: "me.crt"}, Config{Endpoint: "https://a:1", CACert: "ca", ClientCert: "me.crt", TokenCommand: "cmd", Protocol: "grpc"}},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			if diff := cmp.Diff(tc.want, base.Merge(tc.over)); diff != "" {
				t.Errorf("Merge (-want +got):\n%s", diff)
			}
		})
	}
}

func TestValidate(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	file := writeFile(t, filepath.Join(dir, "f.pem"), "x")
	absent := filepath.Join(dir, "absent.pem")
	const secret = "s3cr3t-token-value"

	for name, tc := range map[string]struct {
		c    Config
		want []string // each must be in the error; none means valid
	}{
		"https with client cert":    {c: Config{Endpoint: "https://h:1079", CACert: file, ClientCert: file, ClientKey: file}},
		"plaintext with token":      {c: Config{Endpoint: "http://127.0.0.1:1079", Token: "t", Protocol: "grpc-web"}},
		"token command":             {c: Config{Endpoint: "https://h:1079", TokenCommand: "echo x", Protocol: "connect"}},
		"no endpoint":               {c: Config{}, want: []string{"no endpoint", EnvEndpoint}},
		"not a URL":                 {c: Config{Endpoint: "h:1079"}, want: []string{`endpoint "h:1079"`, "https://"}},
		"http with TLS files":       {c: Config{Endpoint: "http://h:1", CACert: file}, want: []string{"plain http"}},
		"cert without key":          {c: Config{Endpoint: "https://h:1", ClientCert: file}, want: []string{"client-cert is set without client-key"}},
		"key without cert":          {c: Config{Endpoint: "https://h:1", ClientKey: file}, want: []string{"client-key is set without client-cert"}},
		"missing file":              {c: Config{Endpoint: "https://h:1", CACert: absent}, want: []string{"ca-cert", absent}},
		"bad protocol":              {c: Config{Endpoint: "https://h:1", Protocol: "http3"}, want: []string{`protocol "http3"`, "grpc-web"}},
		"token with newline inside": {c: Config{Endpoint: "https://h:1", Token: secret + "\nx"}, want: []string{"control character"}},
		"everything wrong at once": {
			c:    Config{ClientCert: absent, Token: secret, TokenCommand: "echo " + secret, Protocol: "soap"},
			want: []string{"no endpoint", "client-cert is set without client-key", "client-cert: ", "both token and token-command", `protocol "soap"`},
		},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			err := tc.c.Validate()
			if len(tc.want) == 0 {
				if err != nil {
					t.Errorf("Validate: %v, want nil", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("Validate = nil, want an error containing %q", tc.want)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("Validate error %q does not contain %q", err, w)
				}
			}
			if strings.Contains(err.Error(), secret) {
				t.Errorf("Validate error contains the token: %q", err)
			}
			if _, err := tc.c.NewClient(); err == nil {
				t.Errorf("NewClient accepted the invalid config")
			}
		})
	}
}

// fakeJWT returns an unsigned JWT with the given exp claim (none if zero).
func fakeJWT(exp time.Time, n int) string {
	enc := base64.RawURLEncoding.EncodeToString
	claims := fmt.Sprintf(`{"sub":"u","n":%d}`, n)
	if !exp.IsZero() {
		claims = fmt.Sprintf(`{"sub":"u","n":%d,"exp":%d}`, n, exp.Unix())
	}
	return enc([]byte(`{"alg":"none"}`)) + "." + enc([]byte(claims)) + ".sig"
}

// countingCommand returns a token command that appends a line to a count
// file on each run and prints the token in tokenFile.
func countingCommand(t *testing.T) (command, tokenFile string, runs func() int) {
	t.Helper()
	dir := t.TempDir()
	count := filepath.Join(dir, "count")
	tokenFile = filepath.Join(dir, "token")
	command = fmt.Sprintf("echo run >> '%s'; cat '%s'", count, tokenFile)
	return command, tokenFile, func() int {
		b, err := os.ReadFile(count)
		if err != nil {
			return 0
		}
		return strings.Count(string(b), "run")
	}
}

func TestCommandTokenCachesUntilExpiry(t *testing.T) {
	t.Parallel()
	command, tokenFile, runs := countingCommand(t)
	now := time.Unix(1_800_000_000, 0)
	ct := newCommandToken(command)
	ct.now = func() time.Time { return now }
	ctx := context.Background()

	first := fakeJWT(now.Add(time.Hour), 1)
	writeFile(t, tokenFile, first+"\n")
	for range 3 {
		tok, err := ct.token(ctx)
		if err != nil {
			t.Fatalf("token: %v", err)
		}
		if tok != first {
			t.Fatalf("token = %q, want the command's trimmed output", tok)
		}
	}
	if got := runs(); got != 1 {
		t.Errorf("command ran %d times for 3 calls before expiry, want 1", got)
	}

	// Shortly before exp the command runs again and its new token is used.
	second := fakeJWT(now.Add(2*time.Hour), 2)
	writeFile(t, tokenFile, second)
	now = now.Add(time.Hour - tokenRefreshMargin/2)
	tok, err := ct.token(ctx)
	if err != nil {
		t.Fatalf("token: %v", err)
	}
	if tok != second || runs() != 2 {
		t.Errorf("near expiry: token %q after %d runs, want the new token after 2 runs", tok, runs())
	}
}

func TestCommandTokenWithoutExpiry(t *testing.T) {
	t.Parallel()
	command, tokenFile, runs := countingCommand(t)
	ct := newCommandToken(command)
	for _, tok := range []string{"opaque-token", fakeJWT(time.Time{}, 1)} {
		writeFile(t, tokenFile, tok)
		before := runs()
		for range 2 {
			got, err := ct.token(context.Background())
			if err != nil || got != tok {
				t.Fatalf("token = %q, %v; want %q", got, err, tok)
			}
		}
		if runs()-before != 2 {
			t.Errorf("token without exp: command ran %d times for 2 calls, want 2", runs()-before)
		}
	}
}

func TestCommandTokenErrors(t *testing.T) {
	t.Parallel()
	const secret = "s3cr3t-token-value"
	for name, tc := range map[string]struct {
		command string
		want    []string
	}{
		"fails with stderr":       {"echo not logged in >&2; exit 3", []string{"token-command failed", "exit status 3", "not logged in"}},
		"prints token then fails": {"echo " + secret + "; echo " + secret + " >&2; exit 1", []string{"exit status 1", "[redacted]"}},
		"prints nothing":          {"true", []string{"printed no token"}},
		"secret in command":       {"exit 2 # " + secret, []string{"exit status 2"}},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			_, err := newCommandToken(tc.command).token(context.Background())
			if err == nil {
				t.Fatal("token: no error")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
			if strings.Contains(err.Error(), secret) {
				t.Errorf("error contains the secret: %q", err)
			}
		})
	}
}

// TestConfigNewClient connects to a TLS server with the settings of a
// config file: a CA and client certificate given by relative paths, and a
// token from a token command.
func TestConfigNewClient(t *testing.T) {
	p := newTestPKI(t)
	certFile, keyFile := p.issueClient(t, "client", time.Now().Add(-time.Hour), time.Now().Add(time.Hour))
	srv, rec := startTLSServer(t, p, tls.RequireAndVerifyClientCert)

	command, tokenFile, runs := countingCommand(t)
	writeFile(t, tokenFile, "opaque\n")
	cfgPath := filepath.Join(p.dir, "config.yaml")
	rel := func(path string) string {
		r, err := filepath.Rel(p.dir, path)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	f := &ConfigFile{CurrentContext: "test", Contexts: map[string]Config{"test": {
		Endpoint: srv.URL, CACert: rel(p.caFile), ClientCert: rel(certFile), ClientKey: rel(keyFile),
		TokenCommand: command, Protocol: "grpc",
	}}}
	if err := f.Write(cfgPath); err != nil {
		t.Fatal(err)
	}
	clearConfigEnv(t)
	// Run from elsewhere, so that relative paths only work if resolved
	// against the file's directory.
	t.Chdir(t.TempDir())
	cfg, err := LoadConfig(cfgPath, "")
	if err != nil {
		t.Fatalf("LoadConfig: %v", err)
	}
	c, err := cfg.NewClient()
	if err != nil {
		t.Fatalf("NewClient: %v", err)
	}
	if err := call(context.Background(), c); err != nil {
		t.Fatal(err)
	}
	want := []seenRequest{
		{ProtoMajor: 2, URIs: []string{clientID}, Authorization: "Bearer opaque"},
		{ProtoMajor: 2, URIs: []string{clientID}, Authorization: "Bearer opaque"},
	}
	if diff := cmp.Diff(want, rec.seen()); diff != "" {
		t.Errorf("server saw (-want +got):\n%s", diff)
	}
	if runs() != 2 {
		t.Errorf("token command ran %d times for 2 calls with a token without exp, want 2", runs())
	}

	// The CA alone (server-authenticated TLS) with a fixed token.
	srv2, rec2 := startTLSServer(t, p, tls.VerifyClientCertIfGiven)
	c2, err := Config{Endpoint: srv2.URL, CACert: p.caFile, Token: "fixed"}.NewClient()
	if err != nil {
		t.Fatalf("NewClient: %v", err)
	}
	if err := call(context.Background(), c2); err != nil {
		t.Fatal(err)
	}
	if got := rec2.seen(); len(got) != 2 || got[0].Authorization != "Bearer fixed" || len(got[0].URIs) != 0 {
		t.Errorf("server saw %+v, want two calls with Bearer fixed and no client certificate", got)
	}
}
