package config

import (
	"fmt"
	"log/slog"
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
