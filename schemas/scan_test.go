package schemas

import (
	"encoding/json"
	"testing"
)

func TestSkipString(t *testing.T) {
	for _, s := range []string{`""`, `"a"`, `"\""`, `"\\"`, `"\\\""`, `"a\\\\"`, `"\u0022"`, `"é\"\\"`} {
		b := []byte(s + `,"next"`)
		if got := skipString(b, 0); got != len(s) {
			t.Errorf("skipString(%s) = %d, want %d", s, got, len(s))
		}
	}
}

func TestSkipValue(t *testing.T) {
	for _, s := range []string{`0`, `-1.5e+3`, `true`, `null`, `"x"`, `{}`, `[]`, `{"a":[1,"]",{"b":"}"}]}`, `[[],[[]],"\"]"]`} {
		b := []byte(s + ` ,1]`)
		if got := skipValue(b, 0); got != len(s) {
			t.Errorf("skipValue(%s) = %d, want %d", s, got, len(s))
		}
	}
}

func TestStringDecoding(t *testing.T) {
	for _, s := range []string{
		`plain`, `\"\\\/\b\f\n\r\t`, `\u0041\u00e9\u65e5`, `\ud83d\ude00`, `\ud800`, `\udc00`, `\ud800\u0041`,
		`\ud800\ud800\udc00`, `\ud83d\u`, `x\u0000y`, `é日本`,
	} {
		var want string
		if err := json.Unmarshal([]byte(`"`+s+`"`), &want); err != nil {
			continue // not valid JSON; unescapeAt only sees validated strings
		}
		buf := make([]byte, 64)
		n := decodeInto([]byte(s), buf)
		if string(buf[:n]) != want {
			t.Errorf("decodeInto(%s) = %q, want %q", s, buf[:n], want)
		}
		if !keyEquals([]byte(s), want) {
			t.Errorf("keyEquals(%s, %q) = false", s, want)
		}
		if keyEquals([]byte(s), want+"x") || len(want) > 0 && keyEquals([]byte(s), want[:len(want)-1]) {
			t.Errorf("keyEquals(%s) matches a different key", s)
		}
		if short := decodeInto([]byte(s), buf[:1]); short != n {
			t.Errorf("decodeInto(%s) into a short buffer = %d, want %d", s, short, n)
		}
	}
}

// TestPlainRun puts each kind of byte a string's validation must stop at
// (and a plain one) at every offset of strings long and short, and checks
// the eight-at-a-time scan against a byte-by-byte one.
func TestPlainRun(t *testing.T) {
	naive := func(b []byte, i int) int {
		for ; i < len(b); i++ {
			if c := b[i]; c < 0x20 || c == '"' || c == '\\' || c >= 0x80 {
				return i
			}
		}
		return i
	}
	for _, special := range []byte{0x00, 0x1f, '"', '\\', 0x80, 0xc3, 0xff, ' ', '!', '#', '[', ']', 0x7f, 'a'} {
		for n := 0; n <= 40; n++ {
			for at := 0; at < n; at++ {
				b := make([]byte, n)
				for k := range b {
					b[k] = 'x'
				}
				b[at] = special
				// A second stop above the first must not hide it.
				if at+3 < n {
					b[at+3] = 0x01
				}
				for from := 0; from <= n; from++ {
					if got, want := plainRun(b, from), naive(b, from); got != want {
						t.Fatalf("plainRun(%q, %d) = %d, want %d", b, from, got, want)
					}
				}
			}
		}
	}
}
