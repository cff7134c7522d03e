package schemas

import (
	"strconv"
	"time"
	"unicode/utf8"
)

// SchemaVersion is the value of "schemaVersion" in every output envelope
// this package writes. It changes only with an incompatible change of the
// envelope, together with a new output schema file.
const SchemaVersion = 1

// Status is the outcome of enriching one event, the envelope's
// "enrichment.status".
type Status string

// The enrichment statuses.
const (
	// StatusEnriched: the user was found; "user" holds it.
	StatusEnriched Status = "enriched"
	// StatusNotFound: the API answered 404, no such alert or no user for
	// it.
	StatusNotFound Status = "not_found"
	// StatusUnavailable: the breaker was open or the call budget stayed
	// spent for longer than the connector may wait.
	StatusUnavailable Status = "unavailable"
	// StatusFailed: the API kept failing after retries.
	StatusFailed Status = "failed"
	// StatusSkipped: not a Defender for Endpoint alert; no call was made.
	StatusSkipped Status = "skipped"
)

// Source is where an answer came from, the envelope's
// "enrichment.source".
type Source string

// The enrichment sources. An answer is either a user (StatusEnriched) or
// a 404 (StatusNotFound), and either can come from the API or from the
// cache (for a 404, the negative cache). A user can also come from the
// answer for another alert that named the same user (SourceUserCache). The
// other statuses have no answer, so their source is SourceNone, written as
// "".
const (
	SourceAPI   Source = "api"
	SourceCache Source = "cache"
	// SourceUserCache: the user the alert names, as the API answered for
	// another alert that named it too (kept, or from that alert's call);
	// no call was made for this alert. StatusEnriched only.
	SourceUserCache Source = "user_cache"
	SourceNone      Source = ""
)

// Enrichment is the envelope's "enrichment" object.
type Enrichment struct {
	Status Status
	// Source is SourceAPI or SourceCache for StatusEnriched and
	// StatusNotFound, or SourceUserCache for StatusEnriched; SourceNone for
	// the other statuses.
	Source Source
	// EnrichedAt is when the event was processed, for every status. It is
	// written in UTC with millisecond precision, always three digits:
	// "2026-11-27T10:00:00.000Z", so that the strings sort as the times do.
	EnrichedAt time.Time
	// Error says why there is no user: empty for StatusEnriched and
	// StatusSkipped, a short human-readable cause otherwise.
	Error string
}

// Origin is where the input came from, the envelope's "origin" object.
type Origin struct {
	Topic     string
	Partition int
	Offset    int64
}

// enrichedAtLayout is RFC 3339 with fixed milliseconds; the time is
// converted to UTC first, so the zone is always "Z".
const enrichedAtLayout = "2006-01-02T15:04:05.000Z"

// AppendOutput appends the v1 output envelope of one event to dst and
// returns the extended slice:
//
//	{"schemaVersion":1,"alertId":"...","alert":{...},"user":{...}|null,
//	 "enrichment":{"status":"...","source":"...","enrichedAt":"...","error":"..."},
//	 "origin":{"topic":"...","partition":0,"offset":42}}
//
// alert is written verbatim: it must be one JSON value, normally an
// Event's Alert (never that of a rejected event). user is written
// verbatim when e.Status is StatusEnriched and ignored otherwise, since the
// contract has "user" null for every other status; it must then be the
// user object, already stripped of OData annotations. An empty alert, or
// an empty user with StatusEnriched, is written as {} so that the envelope
// stays valid JSON and matches the schema. Strings are escaped as
// encoding/json escapes them without HTML escaping; invalid UTF-8 becomes
// U+FFFD.
//
// The output matches output.v1.schema.json when alertID is a valid alert
// id and Status and Source are as documented on Enrichment. AppendOutput
// does not allocate when dst has room.
func AppendOutput(dst []byte, alertID string, alert, user []byte, e Enrichment, o Origin) []byte {
	dst = append(dst, `{"schemaVersion":`...)
	dst = strconv.AppendInt(dst, SchemaVersion, 10)
	dst = append(dst, `,"alertId":`...)
	dst = appendString(dst, alertID)
	dst = append(dst, `,"alert":`...)
	dst = appendRaw(dst, alert)
	dst = append(dst, `,"user":`...)
	if e.Status == StatusEnriched {
		dst = appendRaw(dst, user)
	} else {
		dst = append(dst, "null"...)
	}
	dst = append(dst, `,"enrichment":{"status":`...)
	dst = appendString(dst, string(e.Status))
	dst = append(dst, `,"source":`...)
	dst = appendString(dst, string(e.Source))
	dst = append(dst, `,"enrichedAt":"`...)
	dst = e.EnrichedAt.UTC().AppendFormat(dst, enrichedAtLayout)
	dst = append(dst, `","error":`...)
	dst = appendString(dst, e.Error)
	dst = append(dst, `},"origin":{"topic":`...)
	dst = appendString(dst, o.Topic)
	dst = append(dst, `,"partition":`...)
	dst = strconv.AppendInt(dst, int64(o.Partition), 10)
	dst = append(dst, `,"offset":`...)
	dst = strconv.AppendInt(dst, o.Offset, 10)
	return append(dst, "}}"...)
}

func appendRaw(dst, v []byte) []byte {
	if len(v) == 0 {
		return append(dst, "{}"...)
	}
	return append(dst, v...)
}

const hexDigits = "0123456789abcdef"

// appendString appends s as a JSON string. It escapes what RFC 8259
// requires plus U+2028 and U+2029, which break JavaScript string literals,
// as encoding/json does; it leaves <, > and & alone, as the output is not
// embedded in HTML.
func appendString(dst []byte, s string) []byte {
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
				i++
				continue
			}
			dst = append(dst, s[start:i]...)
			switch c {
			case '"', '\\':
				dst = append(dst, '\\', c)
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			case '\b':
				dst = append(dst, '\\', 'b')
			case '\f':
				dst = append(dst, '\\', 'f')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			dst = append(dst, s[start:i]...)
			dst = append(dst, `\ufffd`...)
		case r == '\u2028' || r == '\u2029':
			dst = append(dst, s[start:i]...)
			dst = append(dst, '\\', 'u', '2', '0', '2', hexDigits[r&0xf])
		default:
			i += size
			continue
		}
		i += size
		start = i
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}
