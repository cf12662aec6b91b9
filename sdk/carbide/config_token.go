package carbide

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"sync"
	"time"
)

// tokenRefreshMargin is how long before its exp a token from a token
// command is fetched again, so that it does not expire in flight.
const tokenRefreshMargin = 30 * time.Second

// commandToken is the token source of Config.TokenCommand: it runs the
// command with `sh -c` and caches the token until shortly before its exp.
type commandToken struct {
	command string
	now     func() time.Time

	mu     sync.Mutex
	cached string
	expiry time.Time // zero: do not cache
}

func newCommandToken(command string) *commandToken {
	return &commandToken{command: command, now: time.Now}
}

// token returns the cached token, or runs the command for a new one. Its
// errors never contain the token.
func (t *commandToken) token(ctx context.Context) (string, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.cached != "" && t.now().Before(t.expiry.Add(-tokenRefreshMargin)) {
		return t.cached, nil
	}
	t.cached, t.expiry = "", time.Time{}
	tok, err := runTokenCommand(ctx, t.command)
	if err != nil {
		return "", err
	}
	if exp, ok := jwtExpiry(tok); ok {
		t.cached, t.expiry = tok, exp
	}
	return tok, nil
}

// runTokenCommand runs command with `sh -c` and returns its trimmed
// standard output. When it fails, the error carries the command's exit
// status and the end of its standard error, never its standard output or
// the command line (either may hold a secret).
func runTokenCommand(ctx context.Context, command string) (string, error) {
	cmd := exec.CommandContext(ctx, "sh", "-c", command)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		msg := tail(strings.TrimSpace(stderr.String()), 500)
		if out := strings.TrimSpace(stdout.String()); out != "" {
			msg = strings.ReplaceAll(msg, out, "[redacted]")
		}
		if msg != "" {
			return "", fmt.Errorf("token-command failed: %w: %s", err, msg)
		}
		return "", fmt.Errorf("token-command failed: %w", err)
	}
	tok := strings.TrimSpace(stdout.String())
	if tok == "" {
		return "", errors.New("token-command printed no token")
	}
	return tok, nil
}

// tail returns the last n bytes of s, marked as cut when it is longer.
func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return "..." + s[len(s)-n:]
}

// jwtExpiry returns the exp claim of a JWT, if tok is one and has it. It
// does not verify the signature: the server does.
func jwtExpiry(tok string) (time.Time, bool) {
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		return time.Time{}, false
	}
	payload, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(parts[1], "="))
	if err != nil {
		return time.Time{}, false
	}
	var claims struct {
		Exp *json.Number `json:"exp"`
	}
	if err := json.Unmarshal(payload, &claims); err != nil || claims.Exp == nil {
		return time.Time{}, false
	}
	secs, err := claims.Exp.Float64()
	if err != nil {
		return time.Time{}, false
	}
	return time.Unix(0, int64(secs*float64(time.Second))), true
}
