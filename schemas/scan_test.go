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
