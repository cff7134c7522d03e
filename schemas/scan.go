package schemas

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math/bits"
	"strconv"
	"unicode/utf16"
	"unicode/utf8"
)

// The scanner works in two steps. check validates a whole message once
// (syntax, UTF-8, depth) without building anything; after that the
// navigation helpers below may assume well-formed JSON and only skip over
// values, which keeps them short and free of allocations. They still stay
// within bounds on malformed input rather than trust the first step.

// syntaxKind says how a message fails to be JSON. The zero value means it
// does not.
type syntaxKind uint8

const (
	synOK syntaxKind = iota
	synEmpty
	synEOF
	synChar
	synControl
	synUTF8
	synEscape
	synDepth
	synTrailing
)

// syntaxError locates a syntax problem. It is a plain value so that a
// valid message costs no allocation: the text is built only for the
// messages that are rejected.
type syntaxError struct {
	kind syntaxKind
	off  int
	want string // for synChar and synEOF: what the grammar expected
}

// detail renders the error for enricher.error.message, echoing at most
// one byte of the input.
func (e syntaxError) detail(b []byte, maxDepth int) string {
	switch e.kind {
	case synEmpty:
		if len(b) == 0 {
			return "message is empty"
		}
		return "message has no JSON value, only whitespace"
	case synEOF:
		return fmt.Sprintf("invalid JSON: input ends at byte %d, want %s", e.off, e.want)
	case synChar:
		return fmt.Sprintf("invalid JSON at byte %d: found %s, want %s", e.off, describeByte(b, e.off), e.want)
	case synControl:
		return fmt.Sprintf("invalid JSON at byte %d: unescaped control character %s in a string", e.off, describeByte(b, e.off))
	case synUTF8:
		return fmt.Sprintf("invalid JSON at byte %d: invalid UTF-8 in a string", e.off)
	case synEscape:
		return fmt.Sprintf("invalid JSON at byte %d: invalid escape sequence in a string", e.off)
	case synDepth:
		return fmt.Sprintf("invalid JSON: nested too deep at byte %d, more than %d levels", e.off, maxDepth)
	case synTrailing:
		return fmt.Sprintf("invalid JSON at byte %d: data after the top-level value", e.off)
	}
	return "invalid JSON"
}

func describeByte(b []byte, off int) string {
	if off >= len(b) {
		return "end of input"
	}
	c := b[off]
	if c >= 0x20 && c < 0x7f {
		return strconv.QuoteRune(rune(c))
	}
	return fmt.Sprintf("byte 0x%02x", c)
}

// utf8BOM is skipped at the very start of a message: RFC 8259 lets a
// parser ignore it, and Windows tools sometimes write one.
const utf8BOM = "\xef\xbb\xbf"

// check validates that b holds exactly one JSON value, optionally preceded
// by a UTF-8 byte order mark and surrounded by whitespace, with strings in
// valid UTF-8 and containers nested at most maxDepth deep. It returns the
// bounds of the value.
func check(b []byte, maxDepth int) (start, end int, err syntaxError) {
	v := validator{b: b, maxDepth: maxDepth}
	return v.check()
}

// checkTop is check that also returns the values of two members of the
// top-level object, the last of each when a key repeats, nil when absent
// or when the value is not an object: one pass does both.
func checkTop(b []byte, maxDepth int, key1, key2 string) (start, end int, val1, val2 []byte, err syntaxError) {
	v := validator{b: b, maxDepth: maxDepth, watch: [2]string{key1, key2}, watching: true}
	start, end, err = v.check()
	return start, end, v.found[0], v.found[1], err
}

func (v *validator) check() (start, end int, err syntaxError) {
	b := v.b
	if bytes.HasPrefix(b, []byte(utf8BOM)) {
		v.i = len(utf8BOM)
	}
	v.ws()
	if v.i >= len(b) {
		return 0, 0, syntaxError{kind: synEmpty}
	}
	start = v.i
	if !v.value(0) {
		return 0, 0, v.err
	}
	end = v.i
	v.ws()
	if v.i < len(b) {
		return 0, 0, syntaxError{kind: synTrailing, off: v.i}
	}
	return start, end, syntaxError{}
}

// validator is a recursive-descent recogniser. Recursion is bounded by
// maxDepth, checked on entry to every container, so a deeply nested
// message fails after maxDepth bytes instead of growing the stack.
type validator struct {
	b        []byte
	i        int
	maxDepth int
	err      syntaxError
	// watching makes object note the values of the top-level members
	// named watch in found.
	watching bool
	watch    [2]string
	found    [2][]byte
}

func (v *validator) fail(k syntaxKind, want string) bool {
	if v.i >= len(v.b) && (k == synChar || k == synEscape) {
		k = synEOF
	}
	v.err = syntaxError{kind: k, off: v.i, want: want}
	return false
}

func (v *validator) ws() {
	for v.i < len(v.b) {
		switch v.b[v.i] {
		case ' ', '\t', '\n', '\r':
			v.i++
		default:
			return
		}
	}
}

// value recognises one value; depth is the nesting of its container.
func (v *validator) value(depth int) bool {
	v.ws()
	if v.i >= len(v.b) {
		return v.fail(synEOF, "a value")
	}
	switch c := v.b[v.i]; {
	case c == '{':
		return v.object(depth + 1)
	case c == '[':
		return v.array(depth + 1)
	case c == '"':
		return v.str()
	case c == 't':
		return v.literal("true")
	case c == 'f':
		return v.literal("false")
	case c == 'n':
		return v.literal("null")
	case c == '-' || isDigit(c):
		return v.number()
	}
	return v.fail(synChar, "a value")
}

func (v *validator) object(depth int) bool {
	if depth > v.maxDepth {
		return v.fail(synDepth, "")
	}
	v.i++
	v.ws()
	if v.i < len(v.b) && v.b[v.i] == '}' {
		v.i++
		return true
	}
	for {
		if v.i >= len(v.b) || v.b[v.i] != '"' {
			return v.fail(synChar, "a string key")
		}
		keyStart := v.i
		if !v.str() {
			return false
		}
		key := v.b[keyStart+1 : v.i-1]
		v.ws()
		if v.i >= len(v.b) || v.b[v.i] != ':' {
			return v.fail(synChar, "':'")
		}
		v.i++
		v.ws()
		valStart := v.i
		if !v.value(depth) {
			return false
		}
		if depth == 1 && v.watching {
			for k, want := range v.watch {
				if keyEquals(key, want) {
					v.found[k] = v.b[valStart:v.i]
				}
			}
		}
		v.ws()
		if v.i >= len(v.b) {
			return v.fail(synEOF, "',' or '}'")
		}
		switch v.b[v.i] {
		case ',':
			v.i++
			v.ws()
		case '}':
			v.i++
			return true
		default:
			return v.fail(synChar, "',' or '}'")
		}
	}
}

func (v *validator) array(depth int) bool {
	if depth > v.maxDepth {
		return v.fail(synDepth, "")
	}
	v.i++
	v.ws()
	if v.i < len(v.b) && v.b[v.i] == ']' {
		v.i++
		return true
	}
	for {
		if !v.value(depth) {
			return false
		}
		v.ws()
		if v.i >= len(v.b) {
			return v.fail(synEOF, "',' or ']'")
		}
		switch v.b[v.i] {
		case ',':
			v.i++
		case ']':
			v.i++
			return true
		default:
			return v.fail(synChar, "',' or ']'")
		}
	}
}

func (v *validator) literal(lit string) bool {
	for k := 0; k < len(lit); k++ {
		if v.i >= len(v.b) || v.b[v.i] != lit[k] {
			return v.fail(synChar, lit)
		}
		v.i++
	}
	return true
}

func (v *validator) number() bool {
	if v.b[v.i] == '-' {
		v.i++
	}
	switch {
	case v.i < len(v.b) && v.b[v.i] == '0':
		v.i++
	case v.i < len(v.b) && v.b[v.i] >= '1' && v.b[v.i] <= '9':
		v.digits()
	default:
		return v.fail(synChar, "a digit")
	}
	if v.i < len(v.b) && v.b[v.i] == '.' {
		v.i++
		if v.i >= len(v.b) || !isDigit(v.b[v.i]) {
			return v.fail(synChar, "a digit")
		}
		v.digits()
	}
	if v.i < len(v.b) && (v.b[v.i] == 'e' || v.b[v.i] == 'E') {
		v.i++
		if v.i < len(v.b) && (v.b[v.i] == '+' || v.b[v.i] == '-') {
			v.i++
		}
		if v.i >= len(v.b) || !isDigit(v.b[v.i]) {
			return v.fail(synChar, "a digit")
		}
		v.digits()
	}
	return true
}

func (v *validator) digits() {
	for v.i < len(v.b) && isDigit(v.b[v.i]) {
		v.i++
	}
}

func (v *validator) str() bool {
	b := v.b
	i := v.i + 1
	for i < len(b) {
		if i = plainRun(b, i); i >= len(b) {
			break
		}
		c := b[i]
		switch {
		case c == '"':
			v.i = i + 1
			return true
		case c == '\\':
			if i+1 >= len(b) {
				v.i = len(b)
				return v.fail(synEOF, "an escape sequence")
			}
			switch b[i+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				i += 2
			case 'u':
				for k := i + 2; k < i+6; k++ {
					if k >= len(b) || !isHex(b[k]) {
						v.i = k
						return v.fail(synEscape, "a hex digit")
					}
				}
				i += 6
			default:
				v.i = i
				return v.fail(synEscape, "an escape character")
			}
		case c < 0x20:
			v.i = i
			return v.fail(synControl, "")
		case c < utf8.RuneSelf:
			i++
		default:
			r, size := utf8.DecodeRune(b[i:])
			if r == utf8.RuneError && size == 1 {
				v.i = i
				return v.fail(synUTF8, "")
			}
			i += size
		}
	}
	v.i = len(b)
	return v.fail(synEOF, "'\"' closing the string")
}

// plainRun returns the offset of the first byte at or after b[i] that a
// string's validation must look at: a quote, a backslash, a control
// character or a byte of a multi-byte UTF-8 sequence; len(b) if there is
// none. It reads eight bytes at a time: in alerts most bytes are plain.
func plainRun(b []byte, i int) int {
	const (
		ones  = 0x0101010101010101
		highs = 0x8080808080808080
	)
	for ; i+8 <= len(b); i += 8 {
		x := binary.LittleEndian.Uint64(b[i:])
		q := x ^ (ones * '"')
		s := x ^ (ones * '\\')
		// A byte below 0x20, a zero byte of q or s (a quote or a
		// backslash), or a byte with its high bit set. The lowest flagged
		// byte is always a real one: a borrow only runs upwards.
		special := ((x - ones*0x20) & ^x) | ((q - ones) & ^q) | ((s - ones) & ^s) | x
		if special &= highs; special != 0 {
			return i + bits.TrailingZeros64(special)/8
		}
	}
	for ; i < len(b); i++ {
		if c := b[i]; c < 0x20 || c == '"' || c == '\\' || c >= utf8.RuneSelf {
			return i
		}
	}
	return i
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

func isHex(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F'
}

// Navigation over validated JSON. Every helper takes the slice of one
// value and an offset into it.

func skipWS(b []byte, i int) int {
	for i < len(b) {
		switch b[i] {
		case ' ', '\t', '\n', '\r':
			i++
		default:
			return i
		}
	}
	return i
}

// skipString returns the offset just past the string whose opening quote
// is at b[i]. It jumps from quote to quote; a quote is escaped when an odd
// number of backslashes precedes it. Only the backslashes right before a
// quote are counted, each once, so this stays linear.
func skipString(b []byte, i int) int {
	first := i + 1
	i = first
	for i < len(b) {
		q := bytes.IndexByte(b[i:], '"')
		if q < 0 {
			return len(b)
		}
		i += q
		k := i
		for k > first && b[k-1] == '\\' {
			k--
		}
		if (i-k)%2 == 0 {
			return i + 1
		}
		i++
	}
	return len(b)
}

// skipValue returns the offset just past the value starting at b[i].
// Containers are skipped by counting brackets, not by recursion.
func skipValue(b []byte, i int) int {
	if i >= len(b) {
		return len(b)
	}
	switch b[i] {
	case '"':
		return skipString(b, i)
	case '{', '[':
		depth := 0
		for i < len(b) {
			switch b[i] {
			case '"':
				i = skipString(b, i)
				continue
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return i + 1
				}
			}
			i++
		}
		return len(b)
	}
	for i < len(b) {
		switch b[i] {
		case ',', ']', '}', ' ', '\t', '\n', '\r':
			return i
		}
		i++
	}
	return i
}

// objectIter walks the members of an object in order.
type objectIter struct {
	b []byte // the object, from '{' to '}'
	i int
}

func newObjectIter(obj []byte) objectIter { return objectIter{b: obj, i: 1} }

// next returns the raw key (between the quotes, escapes not decoded) and
// the value of the next member.
func (it *objectIter) next() (key, val []byte, ok bool) {
	b := it.b
	i := skipWS(b, it.i)
	if i < len(b) && b[i] == ',' {
		i = skipWS(b, i+1)
	}
	if i >= len(b) || b[i] != '"' {
		return nil, nil, false
	}
	ke := skipString(b, i)
	if ke < i+2 {
		return nil, nil, false
	}
	key = b[i+1 : ke-1]
	i = skipWS(b, ke)
	if i >= len(b) || b[i] != ':' {
		return nil, nil, false
	}
	i = skipWS(b, i+1)
	if i >= len(b) {
		return nil, nil, false
	}
	ve := skipValue(b, i)
	it.i = ve
	return key, b[i:ve], true
}

// arrayIter walks the elements of an array in order.
type arrayIter struct {
	b []byte // the array, from '[' to ']'
	i int
}

func newArrayIter(arr []byte) arrayIter { return arrayIter{b: arr, i: 1} }

func (it *arrayIter) next() (val []byte, ok bool) {
	b := it.b
	i := skipWS(b, it.i)
	if i < len(b) && b[i] == ',' {
		i = skipWS(b, i+1)
	}
	if i >= len(b) || b[i] == ']' {
		return nil, false
	}
	ve := skipValue(b, i)
	if ve <= i {
		return nil, false
	}
	it.i = ve
	return b[i:ve], true
}

// member returns the value of the last member of obj whose decoded key is
// key. The last one wins, as with encoding/json, so a repeated key reads
// the same here as in any Go consumer downstream.
func member(obj []byte, key string) (val []byte, ok bool) {
	it := newObjectIter(obj)
	for {
		k, v, more := it.next()
		if !more {
			return val, ok
		}
		if keyEquals(k, key) {
			val, ok = v, true
		}
	}
}

// element returns the n-th element of arr.
func element(arr []byte, n int) ([]byte, bool) {
	it := newArrayIter(arr)
	for ; ; n-- {
		v, ok := it.next()
		if !ok {
			return nil, false
		}
		if n == 0 {
			return v, true
		}
	}
}

// kindName names the kind of the JSON value starting with c, with its
// article, for details.
func kindName(c byte) string {
	switch c {
	case '{':
		return "an object"
	case '[':
		return "an array"
	case '"':
		return "a string"
	case 't', 'f':
		return "a boolean"
	case 'n':
		return "null"
	}
	return "a number"
}

// keyEquals reports whether the raw JSON string contents raw decode to
// want, without allocating.
func keyEquals(raw []byte, want string) bool {
	// Decoding never makes a string longer.
	if len(raw) < len(want) {
		return false
	}
	j := 0
	for i := 0; i < len(raw); {
		c := raw[i]
		if c != '\\' {
			if j >= len(want) || want[j] != c {
				return false
			}
			i++
			j++
			continue
		}
		r, size := unescapeAt(raw, i)
		i += size
		var tmp [utf8.UTFMax]byte
		n := utf8.EncodeRune(tmp[:], r)
		if len(want)-j < n || want[j:j+n] != string(tmp[:n]) {
			return false
		}
		j += n
	}
	return j == len(want)
}

// decodeInto decodes the raw JSON string contents raw into buf and returns
// the decoded length, which may exceed len(buf): only the first len(buf)
// bytes are written, so a caller can learn that a string is too long
// without holding it.
func decodeInto(raw, buf []byte) int {
	n := 0
	for i := 0; i < len(raw); {
		c := raw[i]
		if c != '\\' {
			if n < len(buf) {
				buf[n] = c
			}
			n++
			i++
			continue
		}
		r, size := unescapeAt(raw, i)
		i += size
		var tmp [utf8.UTFMax]byte
		k := utf8.EncodeRune(tmp[:], r)
		if n < len(buf) {
			copy(buf[n:], tmp[:k])
		}
		n += k
	}
	return n
}

// unescapeAt decodes the escape sequence starting with the backslash at
// raw[i] and returns the rune and the number of bytes it took. Surrogates
// are paired as encoding/json pairs them: a surrogate that does not start
// a valid pair becomes U+FFFD and the next escape is read on its own.
func unescapeAt(raw []byte, i int) (rune, int) {
	if i+1 >= len(raw) {
		return utf8.RuneError, len(raw) - i
	}
	switch raw[i+1] {
	case '"', '\\', '/':
		return rune(raw[i+1]), 2
	case 'b':
		return '\b', 2
	case 'f':
		return '\f', 2
	case 'n':
		return '\n', 2
	case 'r':
		return '\r', 2
	case 't':
		return '\t', 2
	case 'u':
		r, ok := hex4(raw, i+2)
		if !ok {
			return utf8.RuneError, 2
		}
		if !utf16.IsSurrogate(r) {
			return r, 6
		}
		if i+7 < len(raw) && raw[i+6] == '\\' && raw[i+7] == 'u' {
			if r2, ok := hex4(raw, i+8); ok {
				if d := utf16.DecodeRune(r, r2); d != utf8.RuneError {
					return d, 12
				}
			}
		}
		return utf8.RuneError, 6
	}
	return utf8.RuneError, 2
}

func hex4(b []byte, i int) (rune, bool) {
	if i+4 > len(b) {
		return 0, false
	}
	var r rune
	for _, c := range b[i : i+4] {
		switch {
		case c >= '0' && c <= '9':
			c -= '0'
		case c >= 'a' && c <= 'f':
			c = c - 'a' + 10
		case c >= 'A' && c <= 'F':
			c = c - 'A' + 10
		default:
			return 0, false
		}
		r = r<<4 | rune(c)
	}
	return r, true
}
