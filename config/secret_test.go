package config

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"encoding/xml"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const password = "hunter2-s3cret"

// leaked reports whether out carries the password, as is or hex-encoded.
func leaked(out string) bool {
	return strings.Contains(out, password) || strings.Contains(strings.ToLower(out), hex.EncodeToString([]byte(password)))
}

// TestSecretNeverLeaks prints a Secret, and a Config holding one, through
// every path a log line or an error message could take.
func TestSecretNeverLeaks(t *testing.T) {
	c := Default()
	c.KafkaSASLMechanism, c.KafkaSASLUsername, c.KafkaSASLPassword = SASLPlain, "svc", NewSecret(password)
	s := c.KafkaSASLPassword
	type nested struct {
		Name   string
		Secret Secret
		Ptr    *Secret
		Config *Config
	}
	n := nested{Name: "n", Secret: s, Ptr: &s, Config: &c}
	// Unexported fields, which fmt prints by reflection without calling
	// any method (the app keeps its Config so).
	type private struct {
		cfg    Config
		ptr    *Config
		secret Secret
	}
	u := private{cfg: c, ptr: &c, secret: s}
	values := map[string]any{
		"secret":         s,
		"*secret":        &s,
		"config":         c,
		"*config":        &c,
		"nested":         n,
		"*nested":        &n,
		"[]secret":       []Secret{s},
		"map":            map[string]Secret{"pw": s},
		"unexported":     u,
		"*unexported":    &u,
		"any in struct":  struct{ V any }{s},
		"wrapped error":  fmt.Errorf("connecting: %w", fmt.Errorf("login %v failed", s)),
		"joined error":   errors.Join(errors.New("a"), fmt.Errorf("with %s", s)),
		"error of %+v":   fmt.Errorf("config %+v", c),
		"error of %#v":   fmt.Errorf("config %#v", &c),
		"slog.Attr list": []slog.Attr{slog.Any("pw", s)},
	}
	var paths []struct {
		name string
		out  func(v any) string
	}
	add := func(name string, out func(v any) string) {
		paths = append(paths, struct {
			name string
			out  func(v any) string
		}{name, out})
	}
	for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x", "%X", "%d", "%10.3s", "%T %v"} {
		add("fmt "+verb, func(v any) string { return fmt.Sprintf(verb, v, v) })
	}
	add("fmt.Sprint", func(v any) string { return fmt.Sprint(v) })
	add("fmt.Sprintln", func(v any) string { return fmt.Sprintln(v) })
	add("json.Marshal", func(v any) string {
		b, err := json.Marshal(v)
		if err != nil {
			return "" // errors and func values do not marshal; nothing printed
		}
		return string(b)
	})
	add("json.MarshalIndent", func(v any) string { b, _ := json.MarshalIndent(v, "", " "); return string(b) })
	add("xml.Marshal", func(v any) string { b, _ := xml.Marshal(v); return string(b) })
	for _, h := range []struct {
		name string
		new  func(*bytes.Buffer) slog.Handler
	}{
		{"slog JSON", func(b *bytes.Buffer) slog.Handler { return slog.NewJSONHandler(b, nil) }},
		{"slog text", func(b *bytes.Buffer) slog.Handler { return slog.NewTextHandler(b, nil) }},
	} {
		add(h.name+" Any", func(v any) string {
			var b bytes.Buffer
			slog.New(h.new(&b)).Info("msg", "v", v)
			return b.String()
		})
		add(h.name+" group", func(v any) string {
			var b bytes.Buffer
			slog.New(h.new(&b)).With(slog.Group("g", slog.Any("v", v))).Info("msg")
			return b.String()
		})
	}
	for vname, v := range values {
		for _, p := range paths {
			if out := p.out(v); leaked(out) {
				t.Errorf("%s through %s prints the password: %s", vname, p.name, out)
			}
		}
	}
}

// TestSecretRedactedForm: the redacted form says a value is set, and an
// unset Secret does not pretend to be one.
func TestSecretRedactedForm(t *testing.T) {
	b, err := json.Marshal(struct{ S, Empty Secret }{NewSecret(password), NewSecret("")})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := string(b), `{"S":"[redacted]","Empty":""}`; got != want {
		t.Errorf("json = %s, want %s", got, want)
	}
	if got := fmt.Sprintf("%v|%s|%q|%q", NewSecret(password), Secret{}, NewSecret(password), Secret{}); got != `[redacted]||"[redacted]"|""` {
		t.Errorf("fmt = %s", got)
	}
	if s := NewSecret(password); !s.IsSet() || s.Reveal() != password || (Secret{}).IsSet() || (Secret{}).Reveal() != "" {
		t.Error("Reveal and IsSet do not give back what NewSecret holds")
	}
}

// TestAddressErrorsHideUserinfo: a bad address that carries a password is
// quoted without it.
func TestAddressErrorsHideUserinfo(t *testing.T) {
	for _, env := range []map[string]string{
		{"ENRICHER_DEFENDER_API_URL": "https://svc:" + password + "@api.securitycenter.microsoft.com"},
		{"ENRICHER_DEFENDER_API_URL": "http://svc:" + password + "@api.securitycenter.microsoft.com"},
		{"ENRICHER_DEFENDER_API_URL": "https://svc:" + password + "@evil.example"},
		{"ENRICHER_DEFENDER_API_URL": "https://" + password + "@api.securitycenter.microsoft.com/%zz"},
		{"ENRICHER_DEFENDER_API_URL": "https://svc:p@ss " + password + "@api.securitycenter.microsoft.com/x?y#z"},
		{"ENRICHER_KAFKA_BROKERS": "k0:9092,svc:" + password + "@k1:9092"},
		{"ENRICHER_HTTP_ADDR": "svc:" + password + "@:8080"},
	} {
		_, err := load(t, env)
		if err == nil {
			t.Errorf("%v: no error", env)
			continue
		}
		if leaked(err.Error()) || !strings.Contains(err.Error(), "[redacted]") {
			t.Errorf("%v: error %q should quote the address with [redacted] in place of its user info", env, err)
		}
	}
}

func TestRedactUserinfo(t *testing.T) {
	for in, want := range map[string]string{
		"https://u:p@host/path@x?q=a@b#f@g": "https://[redacted]@host/path@x?q=a@b#f@g",
		"u:p@h:9092":                        "[redacted]@h:9092",
		"https://host/a@b":                  "https://host/a@b",
		"k1:9092":                           "k1:9092",
		"https://a@b@host":                  "https://[redacted]@host",
		"":                                  "",
	} {
		if got := RedactUserinfo(in); got != want {
			t.Errorf("RedactUserinfo(%q) = %q, want %q", in, got, want)
		}
	}
}

// A secret option can come from a file named by its variable with _FILE,
// as a mounted Secret or systemd's LoadCredential= gives it.
func TestSecretFromFile(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	pw := write("kafka-password", "s3cret-from-file\n")
	url := write("redis-url", "rediss://:key-from-file@cache.example:6380/0\r\n")
	c, err := load(t, map[string]string{
		"ENRICHER_KAFKA_SASL_MECHANISM": "plain", "ENRICHER_KAFKA_SASL_USERNAME": "svc",
		"ENRICHER_KAFKA_SASL_PASSWORD_FILE": pw, "ENRICHER_REDIS_URL_FILE": url,
	})
	if err != nil {
		t.Fatal(err)
	}
	if c.KafkaSASLPassword.Reveal() != "s3cret-from-file" || c.RedisURL.Reveal() != "rediss://:key-from-file@cache.example:6380/0" {
		t.Errorf("read %q and %q", c.KafkaSASLPassword.Reveal(), c.RedisURL.Reveal())
	}

	for _, tt := range []struct {
		env  map[string]string
		want string
	}{
		{map[string]string{"ENRICHER_KAFKA_SASL_PASSWORD_FILE": pw, "ENRICHER_KAFKA_SASL_PASSWORD": "also"}, "ENRICHER_KAFKA_SASL_PASSWORD_FILE and ENRICHER_KAFKA_SASL_PASSWORD are both set"},
		{map[string]string{"ENRICHER_KAFKA_SASL_PASSWORD_FILE": filepath.Join(dir, "missing")}, "ENRICHER_KAFKA_SASL_PASSWORD_FILE: open"},
		{map[string]string{"ENRICHER_REDIS_URL_FILE": write("empty", "\n")}, "ENRICHER_REDIS_URL_FILE: " + filepath.Join(dir, "empty") + " is empty"},
	} {
		_, err := load(t, tt.env)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%v: error %v, want one saying %q", tt.env, err, tt.want)
		}
		if err != nil && (strings.Contains(err.Error(), "s3cret") || strings.Contains(err.Error(), "also")) {
			t.Errorf("%v: error %q holds the secret", tt.env, err)
		}
	}
}
