package config

import (
	"fmt"
	"log/slog"
	"os"
	"strings"
)

// Secret holds a password that no printing path can reveal: fmt with any
// verb, encoding/json, encoding/xml and other TextMarshaler users, and slog's
// JSON and text handlers all write "[redacted]" (or nothing, when unset).
//
// The value sits behind a function rather than in a string field, so that
// even reflection over a struct that keeps a Secret (or a Config) in an
// unexported field, where fmt cannot call these methods, finds only a
// function pointer. Reveal is the one way to the value: call it where the
// password is handed to the library that needs it, nowhere else.
//
// The zero Secret is unset. Secrets are not comparable; use IsSet.
type Secret struct {
	reveal func() string
}

// NewSecret returns a Secret holding s; an empty s gives an unset Secret.
func NewSecret(s string) Secret {
	if s == "" {
		return Secret{}
	}
	return Secret{reveal: func() string { return s }}
}

// Reveal returns the value.
func (s Secret) Reveal() string {
	if s.reveal == nil {
		return ""
	}
	return s.reveal()
}

// IsSet reports whether the Secret holds a value.
func (s Secret) IsSet() bool { return s.reveal != nil }

const redacted = "[redacted]"

func (s Secret) shown() string {
	if s.IsSet() {
		return redacted
	}
	return ""
}

// String returns "[redacted]", or "" when unset.
func (s Secret) String() string { return s.shown() }

// GoString is String, for %#v.
func (s Secret) GoString() string { return s.shown() }

// Format writes String for every verb and flag, %x and %q included, so that
// no verb reaches the value.
func (s Secret) Format(f fmt.State, verb rune) {
	if verb == 'q' {
		fmt.Fprintf(f, "%q", s.shown())
		return
	}
	_, _ = f.Write([]byte(s.shown()))
}

// MarshalJSON writes "[redacted]" (or "" when unset).
func (s Secret) MarshalJSON() ([]byte, error) { return []byte(`"` + s.shown() + `"`), nil }

// MarshalText writes "[redacted]" (or "" when unset), for encoders that use
// encoding.TextMarshaler.
func (s Secret) MarshalText() ([]byte, error) { return []byte(s.shown()), nil }

// LogValue makes slog write "[redacted]" (or "" when unset) whatever the
// handler.
func (s Secret) LogValue() slog.Value { return slog.StringValue(s.shown()) }

// secretFile reads a secret option from the file that its variable with
// _FILE appended names (ENRICHER_KAFKA_SASL_PASSWORD_FILE), as a mounted
// Kubernetes Secret or systemd's LoadCredential= provides it: the whole
// file, one trailing newline dropped. "" when no file is named. Naming a
// file and setting the variable too is an error, as is a file that cannot
// be read or is empty; the errors name the file, never its content.
func secretFile(name, value, path string) (string, error) {
	if path == "" {
		return "", nil
	}
	if value != "" {
		return "", fmt.Errorf("%s_FILE and %s are both set: keep one", Env(name), Env(name))
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("%s_FILE: %v", Env(name), err)
	}
	v := strings.TrimSuffix(strings.TrimSuffix(string(b), "\n"), "\r")
	if v == "" {
		return "", fmt.Errorf("%s_FILE: %s is empty", Env(name), path)
	}
	return v, nil
}
