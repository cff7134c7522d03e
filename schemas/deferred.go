package schemas

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/defender-enricher/defender-enricher/defender"
)

// An event published unavailable is deferred: its output envelope is also
// written, byte for byte, to the retry topic, keyed by the alert id, with
// the input's headers and the ones below. The connector consumes the retry
// topic, looks the alert up again when the budget allows, and publishes an
// update of the event (AppendUpdate).
const (
	// HeaderDeferredRecord carries the decimal index of the record within
	// its streaming-API envelope; it is set only for envelope records, so
	// that the record is read as one when it is looked up again.
	HeaderDeferredRecord = "enricher.deferred.record"
)

// deferredHeaderPrefix is the prefix of the connector's own headers on
// the retry topic: an input header with it is dropped, so that no input
// can pass for a deferral the connector made.
const deferredHeaderPrefix = "enricher.deferred."

// Update is the envelope's "update" object, present only on an update: an
// event published again, with a new enrichment, in place of an earlier
// event with the same alertId, alert and origin.
type Update struct {
	// PreviousStatus is the status of the event this one replaces
	// (StatusUnavailable).
	PreviousStatus Status
	// PreviousEnrichedAt is the enrichedAt of the event this one replaces.
	PreviousEnrichedAt time.Time
}

// AppendUpdate appends the output envelope of an update to dst: the
// envelope AppendOutput writes, with "update" added last:
//
//	{..., "origin":{...},"update":{"previousStatus":"unavailable","previousEnrichedAt":"..."}}
func AppendUpdate(dst []byte, alertID string, alert, user []byte, e Enrichment, o Origin, u Update) []byte {
	dst = AppendOutput(dst, alertID, alert, user, e, o)
	dst = append(dst[:len(dst)-1], `,"update":{"previousStatus":`...)
	dst = appendString(dst, string(u.PreviousStatus))
	dst = append(dst, `,"previousEnrichedAt":"`...)
	dst = u.PreviousEnrichedAt.UTC().AppendFormat(dst, enrichedAtLayout)
	return append(dst, `"}}`...)
}

// Deferred is a record of the retry topic, read back.
type Deferred struct {
	AlertID string
	// Alert is the alert object or streaming-API record, as it came.
	Alert []byte
	// Record reports whether Alert is a streaming-API record.
	Record bool
	// Status and EnrichedAt are those of the event published: the update
	// replaces it.
	Status     Status
	EnrichedAt time.Time
	Origin     Origin
}

// ErrNotDeferred is matched by the error of ParseDeferred: the record is
// not a deferral the connector wrote.
var ErrNotDeferred = errors.New("not a deferred event")

// ParseDeferred reads a record of the retry topic: value is an output
// envelope of status unavailable, headers those the connector wrote with
// it. Anything else is an error matching ErrNotDeferred; the connector
// dead-letters it rather than guess.
func ParseDeferred(value []byte, headers []kafka.Header) (Deferred, error) {
	var env struct {
		SchemaVersion int             `json:"schemaVersion"`
		AlertID       *string         `json:"alertId"`
		Alert         json.RawMessage `json:"alert"`
		Enrichment    struct {
			Status     Status `json:"status"`
			EnrichedAt string `json:"enrichedAt"`
		} `json:"enrichment"`
		Origin *struct {
			Topic     string `json:"topic"`
			Partition int    `json:"partition"`
			Offset    int64  `json:"offset"`
		} `json:"origin"`
	}
	bad := func(format string, a ...any) (Deferred, error) {
		return Deferred{}, fmt.Errorf("%w: %s", ErrNotDeferred, fmt.Sprintf(format, a...))
	}
	if err := json.Unmarshal(value, &env); err != nil {
		return bad("not an output envelope: %v", err)
	}
	switch {
	case env.SchemaVersion != SchemaVersion:
		return bad("schemaVersion %d, want %d", env.SchemaVersion, SchemaVersion)
	case env.AlertID == nil || !defender.ValidAlertID(*env.AlertID):
		return bad("no valid alertId")
	case len(env.Alert) == 0 || env.Alert[0] != '{':
		return bad("alert is not an object")
	case env.Enrichment.Status != StatusUnavailable:
		return bad("status %q, want %q", env.Enrichment.Status, StatusUnavailable)
	case env.Origin == nil || env.Origin.Topic == "" || env.Origin.Partition < 0 || env.Origin.Offset < 0:
		return bad("no origin")
	}
	at, err := time.Parse(time.RFC3339Nano, env.Enrichment.EnrichedAt)
	if err != nil {
		return bad("enrichedAt %q is not a time", env.Enrichment.EnrichedAt)
	}
	d := Deferred{
		AlertID: *env.AlertID, Alert: env.Alert, Status: env.Enrichment.Status, EnrichedAt: at,
		Origin: Origin{Topic: env.Origin.Topic, Partition: env.Origin.Partition, Offset: env.Origin.Offset},
	}
	for _, h := range headers {
		if h.Key == HeaderDeferredRecord {
			n, err := strconv.Atoi(string(h.Value))
			if err != nil || n < 0 {
				return bad("header %s %q is not a record index", HeaderDeferredRecord, h.Value)
			}
			d.Record = true
		}
	}
	return d, nil
}

// DeferredHeaders returns the headers of a retry-topic record: the input's
// headers without any of the connector's deferral headers, then
// HeaderDeferredRecord when record is 0 or more.
func DeferredHeaders(in []kafka.Header, record int) []kafka.Header {
	out := make([]kafka.Header, 0, len(in)+1)
	for _, h := range in {
		if !hasPrefixFold(h.Key, deferredHeaderPrefix) {
			out = append(out, h)
		}
	}
	if record >= 0 {
		out = append(out, kafka.Header{Key: HeaderDeferredRecord, Value: strconv.AppendInt(nil, int64(record), 10)})
	}
	return out
}

// UpdateHeaders returns the headers of an update: those of its retry-topic
// record without the deferral headers, which are the input's.
func UpdateHeaders(in []kafka.Header) []kafka.Header {
	out := make([]kafka.Header, 0, len(in))
	for _, h := range in {
		if !hasPrefixFold(h.Key, deferredHeaderPrefix) {
			out = append(out, h)
		}
	}
	return out
}
