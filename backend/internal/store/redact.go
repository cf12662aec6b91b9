package store

import (
	"net/url"
	"strings"
)

// hidden stands in for a secret in what Redact returns.
const hidden = "****"

// Redact hides every secret of a PostgreSQL connection string, a
// postgres:// URL or a key=value string (host=db password=...): the
// password of a URL's user, and the value of each parameter that holds a
// secret (password, sslpassword, sslkey, and any other whose name has
// "password", "secret" or "token" in it). A string it cannot read is
// hidden whole.
func Redact(raw string) string {
	if strings.Contains(raw, "://") {
		return redactURL(raw)
	}
	pairs, ok := parseKeyValues(raw)
	if !ok {
		return "(unreadable connection string, hidden)"
	}
	var b strings.Builder
	for i, kv := range pairs {
		if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(kv.key + "=")
		if secretParam(kv.key) {
			b.WriteString(hidden)
		} else {
			b.WriteString(kv.raw)
		}
	}
	return b.String()
}

func redactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "(unreadable database URL, hidden)"
	}
	if _, ok := u.User.Password(); ok {
		u.User = url.UserPassword(u.User.Username(), "xxxxx")
	}
	params := strings.Split(u.RawQuery, "&")
	for i, p := range params {
		k, _, _ := strings.Cut(p, "=")
		if name, err := url.QueryUnescape(k); err != nil || secretParam(name) {
			params[i] = k + "=xxxxx"
		}
	}
	u.RawQuery = strings.Join(params, "&")
	u.Fragment, u.RawFragment = "", ""
	return strings.ReplaceAll(u.String(), "xxxxx", hidden)
}

// secretParam says whether a connection parameter holds a secret.
func secretParam(name string) bool {
	name = strings.ToLower(name)
	return name == "sslkey" || strings.Contains(name, "password") ||
		strings.Contains(name, "secret") || strings.Contains(name, "token")
}

// keyValue is one parameter of a key=value connection string: its value
// as written (raw, perhaps quoted) and as meant.
type keyValue struct {
	key, raw, value string
}

// parseKeyValues reads a libpq key=value connection string: values may be
// single-quoted, with backslash escapes.
func parseKeyValues(s string) ([]keyValue, bool) {
	var out []keyValue
	for {
		s = strings.TrimLeft(s, " \t\n\r")
		if s == "" {
			return out, len(out) > 0
		}
		eq := strings.IndexByte(s, '=')
		if eq <= 0 {
			return nil, false
		}
		key := strings.TrimSpace(s[:eq])
		if strings.ContainsAny(key, " \t'\\") {
			return nil, false
		}
		s = strings.TrimLeft(s[eq+1:], " \t")
		var kv keyValue
		if strings.HasPrefix(s, "'") {
			var v strings.Builder
			end := -1
			for i := 1; i < len(s); i++ {
				switch s[i] {
				case '\\':
					if i+1 < len(s) {
						i++
						v.WriteByte(s[i])
					}
					continue
				case '\'':
					end = i
				}
				if end >= 0 {
					break
				}
				v.WriteByte(s[i])
			}
			if end < 0 {
				return nil, false // an unterminated quote
			}
			kv = keyValue{key: key, raw: s[:end+1], value: v.String()}
			s = s[end+1:]
		} else {
			end := strings.IndexAny(s, " \t\n\r")
			if end < 0 {
				end = len(s)
			}
			kv = keyValue{key: key, raw: s[:end], value: strings.ReplaceAll(s[:end], `\`, "")}
			s = s[end:]
		}
		out = append(out, kv)
	}
}

// secrets are the secret values of a connection string, as written and
// as meant, for scrubbing them from text that may quote them.
func secrets(raw string) []string {
	var out []string
	add := func(vs ...string) {
		for _, v := range vs {
			if v != "" {
				out = append(out, v)
			}
		}
	}
	if strings.Contains(raw, "://") {
		u, err := url.Parse(raw)
		if err != nil {
			return []string{raw}
		}
		if pw, ok := u.User.Password(); ok {
			add(pw, url.QueryEscape(pw), url.PathEscape(pw))
		}
		for _, p := range strings.Split(u.RawQuery, "&") {
			k, v, _ := strings.Cut(p, "=")
			name, _ := url.QueryUnescape(k)
			if secretParam(name) {
				dec, _ := url.QueryUnescape(v)
				add(v, dec)
			}
		}
		return out
	}
	pairs, ok := parseKeyValues(raw)
	if !ok {
		return []string{raw}
	}
	for _, kv := range pairs {
		if secretParam(kv.key) {
			add(kv.raw, kv.value)
		}
	}
	return out
}

// scrub returns err with every secret of the connection string raw hidden
// from its message: drivers quote what they fail to parse.
func scrub(err error, raw string) error {
	if err == nil {
		return nil
	}
	msg := err.Error()
	clean := msg
	for _, s := range secrets(raw) {
		clean = strings.ReplaceAll(clean, s, hidden)
	}
	if clean == msg {
		return err
	}
	return &scrubbed{msg: clean, err: err}
}

// scrubbed is an error whose message hides secrets; errors.Is and As still
// see what it wraps.
type scrubbed struct {
	msg string
	err error
}

func (e *scrubbed) Error() string { return e.msg }
func (e *scrubbed) Unwrap() error { return e.err }
