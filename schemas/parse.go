package schemas

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/defender-enricher/defender-enricher/defender"
)

// Defaults of ParserConfig.
const (
	DefaultIDPointer = "/id"
	DefaultMaxBytes  = 1_000_000
	DefaultMaxDepth  = 64
	// DefaultMaxRecords is the most records one streaming-API envelope
	// may carry. Defender's streaming API sends a few dozen at a time; a
	// message with more is one dead letter, so that a single message
	// cannot fan out into hundreds of thousands of events.
	DefaultMaxRecords = 1000
	// MaxDepthLimit is the largest MaxDepth NewParser accepts. The
	// validator recurses once per level, so the bound keeps its stack
	// small whatever the configuration says.
	MaxDepthLimit = 10_000
)

// The fixed places of a streaming-API envelope.
const (
	recordsKey       = "records"
	propertiesKey    = "properties"
	alertIDKey       = "AlertId"
	serviceSourceKey = "ServiceSource"
	recordIDPointer  = "/properties/AlertId"
)

// ParserConfig configures a Parser. The zero value is the default
// configuration.
type ParserConfig struct {
	// IDPointer is the RFC 6901 JSON pointer to the alert id in a plain
	// object (forms 1 and 3). Empty means DefaultIDPointer, "/id", which
	// is also where the alerts API puts it. Array indices are allowed:
	// "/alerts/0/id".
	IDPointer string
	// MaxBytes is the largest message Parse scans; larger ones are
	// rejected with ReasonTooLarge. Zero means DefaultMaxBytes.
	MaxBytes int
	// MaxDepth is the deepest nesting of objects and arrays accepted, the
	// top-level object counting as 1; deeper messages are rejected with
	// ReasonInvalidJSON. Zero means DefaultMaxDepth; at most
	// MaxDepthLimit.
	MaxDepth int
	// MaxRecords is the most records a streaming-API envelope may carry;
	// one with more is rejected whole with ReasonTooManyRecords, before
	// any record is read. Zero means DefaultMaxRecords.
	MaxRecords int
}

// Parser splits message values into events. It holds no mutable state,
// so one Parser is safe for concurrent use by any number of goroutines.
type Parser struct {
	pointer  string
	tokens   []pointerToken
	maxBytes int
	maxDepth int
	maxRecs  int
}

// pointerToken is one reference token of the id pointer, unescaped.
type pointerToken struct {
	key    string
	index  int    // the array index the token spells, or -1
	prefix string // the pointer up to and including this token, for details
}

// NewParser returns a Parser for cfg. It fails when IDPointer is neither
// empty nor an RFC 6901 pointer (starting with "/", "~" only in "~0" and
// "~1", valid UTF-8), or when MaxBytes, MaxDepth or MaxRecords is negative
// or MaxDepth is above MaxDepthLimit.
func NewParser(cfg ParserConfig) (*Parser, error) {
	p := &Parser{pointer: cfg.IDPointer, maxBytes: cfg.MaxBytes, maxDepth: cfg.MaxDepth, maxRecs: cfg.MaxRecords}
	if p.pointer == "" {
		p.pointer = DefaultIDPointer
	}
	if p.maxBytes == 0 {
		p.maxBytes = DefaultMaxBytes
	}
	if p.maxDepth == 0 {
		p.maxDepth = DefaultMaxDepth
	}
	if p.maxRecs == 0 {
		p.maxRecs = DefaultMaxRecords
	}
	if p.maxRecs < 0 {
		return nil, fmt.Errorf("schemas: max records %d: must be positive, or 0 for the default %d", cfg.MaxRecords, DefaultMaxRecords)
	}
	if p.maxBytes < 0 {
		return nil, fmt.Errorf("schemas: max bytes %d: must be positive, or 0 for the default %d", cfg.MaxBytes, DefaultMaxBytes)
	}
	if p.maxDepth < 0 || p.maxDepth > MaxDepthLimit {
		return nil, fmt.Errorf("schemas: max depth %d: must be 1 to %d, or 0 for the default %d", cfg.MaxDepth, MaxDepthLimit, DefaultMaxDepth)
	}
	tokens, err := parsePointer(p.pointer)
	if err != nil {
		return nil, fmt.Errorf("schemas: alert id pointer %q: %w", cfg.IDPointer, err)
	}
	p.tokens = tokens
	return p, nil
}

func parsePointer(ptr string) ([]pointerToken, error) {
	if !strings.HasPrefix(ptr, "/") {
		return nil, errors.New(`must start with "/"`)
	}
	if !utf8.ValidString(ptr) {
		return nil, errors.New("must be valid UTF-8")
	}
	var tokens []pointerToken
	for end := 0; end < len(ptr); {
		start := end + 1
		end = start + strings.IndexByte(ptr[start:], '/')
		if end < start {
			end = len(ptr)
		}
		raw := ptr[start:end]
		for i := 0; i < len(raw); i++ {
			if raw[i] == '~' && (i+1 == len(raw) || raw[i+1] != '0' && raw[i+1] != '1') {
				return nil, errors.New(`"~" must be followed by 0 or 1`)
			}
		}
		// ~1 first: "~01" is "~1" escaped, not "/".
		key := strings.ReplaceAll(strings.ReplaceAll(raw, "~1", "/"), "~0", "~")
		tokens = append(tokens, pointerToken{key: key, index: arrayIndex(key), prefix: ptr[:end]})
	}
	return tokens, nil
}

// arrayIndex returns the array index an RFC 6901 token spells ("0" or
// digits without a leading zero), or -1. "-", the element past the end,
// never names an existing value, so it is -1 too.
func arrayIndex(tok string) int {
	if tok == "" || len(tok) > 1 && tok[0] == '0' {
		return -1
	}
	for i := 0; i < len(tok); i++ {
		if !isDigit(tok[i]) {
			return -1
		}
	}
	n, err := strconv.Atoi(tok)
	if err != nil {
		return -1
	}
	return n
}

// Event is one alert event read from a message.
//
// Exactly one of three things holds: Reject is set (the event goes to the
// dead-letter topic), Skip is set (publish unenriched, status "skipped"),
// or neither (look the user up). Skip and Reject are never both set.
type Event struct {
	// AlertID is a valid alert id (defender.ValidAlertID), or "" when
	// Reject is set, even if some invalid id was read.
	AlertID string
	// Alert is the alert object or envelope record exactly as it came, a
	// subslice of the message value without surrounding whitespace or
	// byte order mark. For a whole-message reject it is the whole value.
	// It aliases the value, so the value must not be changed while the
	// event is in use.
	Alert []byte
	// Skip marks a streaming-API record from a service other than
	// Defender for Endpoint.
	Skip bool
	// Reject is why the event goes to the dead-letter topic; empty for an
	// event that does not.
	Reject Reason
	// Detail says, for a rejected event, what was wrong and where, for
	// the enricher.error.message header. It quotes at most a few dozen
	// bytes of the input.
	Detail string
	// Record is the index of the record within a streaming-API envelope,
	// or -1 for an event that is a whole message.
	Record int
}

// Parse splits one Kafka message value into events and appends them to
// dst, so that a caller can reuse one slice across messages. It never
// fails as a whole: every problem becomes an event with Reject set.
//
// Checks run in this order: size (before any scanning), JSON syntax over
// the whole value (invalid UTF-8 in a string and nesting deeper than
// MaxDepth count as syntax errors), then shape. A leading UTF-8 byte order
// mark and whitespace around the value are accepted; anything after the
// value is not.
//
// Parse always yields at least one event, so that no message is ever
// acknowledged without an output or a dead letter.
//
// An object is a streaming-API envelope when nothing (or null) is at the
// configured id pointer and its "records" member is an array; any other
// object is a plain alert (forms 1 and 3), whatever else it carries, so an
// alert that happens to have a "records" array is still one alert.
//
// A plain object yields one event with Record -1 and the alert id at the
// configured pointer. Missing, null, wrong-kind and invalid ids reject the
// whole message, with Alert the whole value.
//
// A streaming-API envelope yields one event per record, in order, with
// Record its index and Alert its bytes. An envelope with no records is
// rejected whole with ReasonEmptyEnvelope, and one with more than
// MaxRecords records with ReasonTooManyRecords. A bad record rejects only
// itself; the envelope's other records are unaffected. A record's id is at
// "/properties/AlertId". A record is skipped unless its
// properties.ServiceSource is "Microsoft Defender for Endpoint" or
// "MicrosoftDefenderForEndpoint" (ASCII case-insensitive); a record with
// no ServiceSource, or a null or empty one, is taken to be from Defender
// for Endpoint and looked up, since the API answers 404 for anything else
// anyway. A ServiceSource that is not a string names no service, so the
// record is skipped. A skipped record still needs a valid alert id, as the
// output is keyed by it.
//
// Object keys match exactly (case-sensitive) after their JSON escapes are
// decoded. When an object repeats a key, the last one wins, as with
// encoding/json. Ids are decoded from JSON escapes before they are
// checked, so "da6\u0033" is the id "da63" and "a\/b" is the invalid id
// "a/b".
//
// A valid id costs one allocation (the AlertID string); a rejected event
// costs a few more for its Detail.
func (p *Parser) Parse(value []byte, dst []Event) []Event {
	if len(value) > p.maxBytes {
		return append(dst, wholeReject(value, ReasonTooLarge,
			fmt.Sprintf("message is %d bytes, larger than the limit of %d", len(value), p.maxBytes)))
	}
	// One pass validates the message and finds, at its top level, both
	// the envelope's records and the first step of the pointer; the last
	// of each wins.
	start, end, records, first, serr := checkTop(value, p.maxDepth, recordsKey, p.tokens[0].key)
	if serr.kind != synOK {
		return append(dst, wholeReject(value, ReasonInvalidJSON, serr.detail(value, p.maxDepth)))
	}
	top := value[start:end]
	if top[0] != '{' {
		return append(dst, wholeReject(value, ReasonNotObject,
			"message is "+kindName(top[0])+", want an object"))
	}
	if len(records) == 0 || records[0] != '[' || p.hasID(first) {
		return append(dst, p.plain(value, top, first))
	}
	switch n := countElements(records, p.maxRecs+1); {
	case n == 0:
		return append(dst, wholeReject(value, ReasonEmptyEnvelope, `streaming-API envelope with no records ("records" is an empty array)`))
	case n > p.maxRecs:
		return append(dst, wholeReject(value, ReasonTooManyRecords,
			fmt.Sprintf("streaming-API envelope with more than %d records, the limit (ENRICHER_MAX_RECORDS)", p.maxRecs)))
	}
	return appendRecords(records, dst)
}

// countElements counts the elements of a JSON array, stopping at limit.
func countElements(arr []byte, limit int) int {
	it := newArrayIter(arr)
	n := 0
	for n < limit {
		if _, ok := it.next(); !ok {
			break
		}
		n++
	}
	return n
}

func wholeReject(value []byte, r Reason, detail string) Event {
	return Event{Alert: value, Reject: r, Detail: detail, Record: -1}
}

// plain reads the event of a plain object whose first pointer step
// resolved to first (nil when absent).
func (p *Parser) plain(value, obj, first []byte) Event {
	cur := first
	for k := 0; ; k++ {
		if cur == nil {
			detail := "no alert id at " + strconv.Quote(p.pointer)
			if k < len(p.tokens)-1 {
				detail = p.missing(k, "not found")
			}
			return wholeReject(value, ReasonMissingAlertID, detail)
		}
		if k == len(p.tokens)-1 {
			break
		}
		next := p.tokens[k+1]
		switch cur[0] {
		case '{':
			cur, _ = member(cur, next.key)
		case '[':
			if next.index < 0 {
				cur = nil
			} else {
				cur, _ = element(cur, next.index)
			}
		default:
			return wholeReject(value, ReasonMissingAlertID, p.missing(k, "is "+kindName(cur[0])))
		}
	}
	id, reason, problem := readID(cur)
	if reason != "" {
		return wholeReject(value, reason, "alert id at "+strconv.Quote(p.pointer)+" "+problem)
	}
	return Event{AlertID: id, Alert: obj, Record: -1}
}

// hasID reports whether the pointer, whose first step resolved to first
// (nil when absent), leads to a value other than null.
func (p *Parser) hasID(first []byte) bool {
	cur := first
	for _, tok := range p.tokens[1:] {
		if cur == nil {
			return false
		}
		switch cur[0] {
		case '{':
			cur, _ = member(cur, tok.key)
		case '[':
			if tok.index < 0 {
				return false
			}
			cur, _ = element(cur, tok.index)
		default:
			return false
		}
	}
	return cur != nil && cur[0] != 'n'
}

// missing words a missing id whose path stops at token k, saying what
// the value there is (or that there is none), so that an operator can
// tell a wrong pointer from a wrong message.
func (p *Parser) missing(k int, what string) string {
	return "no alert id at " + strconv.Quote(p.pointer) + ": " + strconv.Quote(p.tokens[k].prefix) + " " + what
}

// appendRecords appends one event per record of a streaming-API envelope.
func appendRecords(records []byte, dst []Event) []Event {
	it := newArrayIter(records)
	for n := 0; ; n++ {
		rec, ok := it.next()
		if !ok {
			return dst
		}
		dst = append(dst, record(rec, n))
	}
}

func record(rec []byte, n int) Event {
	ev := Event{Alert: rec, Record: n}
	reject := func(r Reason, detail string) Event {
		ev.Reject = r
		ev.Detail = "record " + strconv.Itoa(n) + ": " + detail
		return ev
	}
	if rec[0] != '{' {
		return reject(ReasonNotObject, "record is "+kindName(rec[0])+", want an object")
	}
	props, ok := member(rec, propertiesKey)
	if !ok {
		return reject(ReasonMissingAlertID, `no alert id at "`+recordIDPointer+`": "/`+propertiesKey+`" not found`)
	}
	if props[0] != '{' {
		return reject(ReasonMissingAlertID, `no alert id at "`+recordIDPointer+`": "/`+propertiesKey+`" is `+kindName(props[0]))
	}
	var id, source []byte
	pit := newObjectIter(props)
	for {
		k, v, ok := pit.next()
		if !ok {
			break
		}
		if keyEquals(k, alertIDKey) {
			id = v
		}
		if keyEquals(k, serviceSourceKey) {
			source = v
		}
	}
	if id == nil {
		return reject(ReasonMissingAlertID, `no alert id at "`+recordIDPointer+`"`)
	}
	alertID, reason, problem := readID(id)
	if reason != "" {
		return reject(reason, `alert id at "`+recordIDPointer+`" `+problem)
	}
	ev.AlertID = alertID
	ev.Skip = !fromEndpoint(source)
	return ev
}

// The ServiceSource values of Defender for Endpoint: the streaming API's
// display name and the alerts API v2 enum.
const (
	endpointSourceName = "Microsoft Defender for Endpoint"
	endpointSourceEnum = "MicrosoftDefenderForEndpoint"
)

// fromEndpoint reports whether a record's ServiceSource value (nil when
// absent) counts as Defender for Endpoint.
func fromEndpoint(source []byte) bool {
	if source == nil || source[0] == 'n' {
		return true
	}
	if source[0] != '"' || len(source) < 2 {
		return false
	}
	var buf [len(endpointSourceName)]byte
	n := decodeInto(source[1:len(source)-1], buf[:])
	if n > len(buf) {
		return false
	}
	s := buf[:n]
	return n == 0 || asciiEqualFold(s, endpointSourceName) || asciiEqualFold(s, endpointSourceEnum)
}

// asciiEqualFold is strings.EqualFold without Unicode folding, so that
// look-alikes such as U+017F (ſ, which folds to s) do not match.
func asciiEqualFold(b []byte, s string) bool {
	if len(b) != len(s) {
		return false
	}
	for i := 0; i < len(b); i++ {
		x, y := b[i], s[i]
		if 'A' <= x && x <= 'Z' {
			x += 'a' - 'A'
		}
		if 'A' <= y && y <= 'Z' {
			y += 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}

// readID reads the alert id out of v, the value found where the id
// belongs. On failure it returns the reason and a problem phrase that
// completes "alert id at <pointer> ...".
func readID(v []byte) (id string, reason Reason, problem string) {
	switch v[0] {
	case '"':
	case 'n':
		return "", ReasonMissingAlertID, "is null"
	default:
		return "", ReasonInvalidAlertID, "is " + kindName(v[0]) + ", want a string"
	}
	raw := v[1 : len(v)-1]
	// Decoding happens in a buffer no longer than the longest valid id,
	// so a huge id is measured but never copied.
	var buf [defender.MaxAlertIDLength]byte
	n := decodeInto(raw, buf[:])
	switch {
	case n == 0:
		return "", ReasonInvalidAlertID, "is an empty string"
	case n > len(buf):
		return "", ReasonInvalidAlertID, fmt.Sprintf("is %d bytes long, want at most %d", n, defender.MaxAlertIDLength)
	}
	id = string(buf[:n])
	if !defender.ValidAlertID(id) {
		return "", ReasonInvalidAlertID, "is " + quoteShort(id) + ", want 1 to " +
			strconv.Itoa(defender.MaxAlertIDLength) + " characters of A-Z a-z 0-9 _ -"
	}
	return id, "", ""
}

// quoteShort quotes s in ASCII, cut to 32 bytes so that a detail never
// carries much of the input.
func quoteShort(s string) string {
	const max = 32
	if len(s) <= max {
		return strconv.QuoteToASCII(s)
	}
	cut := max
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return strconv.QuoteToASCII(s[:cut]) + "..."
}
