package schemas

import (
	"strconv"
	"strings"

	"github.com/segmentio/kafka-go"
)

// HeaderTruncated is set on a dead letter whose value was cut to fit the
// record size limit; it carries the original length, in decimal.
const HeaderTruncated = "enricher.error.truncated"

// HeaderDropped is set on a dead letter that left out the input's headers,
// or its key and headers, because they alone were over the size limit.
const HeaderDropped = "enricher.error.dropped"

// Reserved header prefixes: a dead letter's headers with these prefixes are
// the connector's own, never the input's.
const (
	enricherHeaderPrefix = "enricher.error."
	connectHeaderPrefix  = "__connect.errors."
)

// DeadLetter says why and from where a message, or one record of an
// envelope, goes to the dead-letter topic.
type DeadLetter struct {
	Reason Reason
	// Detail is Event.Detail, for HeaderMessage.
	Detail string
	Origin Origin
	// Record is the record's index within an envelope, or -1 for a whole
	// message (then HeaderRecord is left out).
	Record int
	// TruncatedFrom is the value's length before it was cut to fit, or 0
	// when it was not cut (then HeaderTruncated is left out).
	TruncatedFrom int
	// Dropped names what of the input was left out because even the cut
	// value did not make it fit: "headers", or "key,headers". Empty when
	// nothing was (then HeaderDropped is left out).
	Dropped string
}

// DeadLetterHeaders returns the headers of a dead letter: the input's
// headers in their order, less any that carry a reserved name (an
// enricher.error.* or __connect.errors.* header of the input would
// otherwise stand before the connector's own and mislead a reader that
// takes the first of a name), followed by the reason, the detail, Kafka
// Connect's origin headers and, where they apply, the record index and the
// truncated length. The input slice is not modified.
func DeadLetterHeaders(in []kafka.Header, dl DeadLetter) []kafka.Header {
	out := make([]kafka.Header, 0, len(in)+8)
	for _, h := range in {
		if !reservedHeader(h.Key) {
			out = append(out, h)
		}
	}
	out = append(out,
		kafka.Header{Key: HeaderReason, Value: []byte(dl.Reason)},
		kafka.Header{Key: HeaderMessage, Value: []byte(dl.Detail)},
		kafka.Header{Key: HeaderTopic, Value: []byte(dl.Origin.Topic)},
		kafka.Header{Key: HeaderPartition, Value: strconv.AppendInt(nil, int64(dl.Origin.Partition), 10)},
		kafka.Header{Key: HeaderOffset, Value: strconv.AppendInt(nil, dl.Origin.Offset, 10)},
	)
	if dl.Record >= 0 {
		out = append(out, kafka.Header{Key: HeaderRecord, Value: strconv.AppendInt(nil, int64(dl.Record), 10)})
	}
	if dl.TruncatedFrom > 0 {
		out = append(out, kafka.Header{Key: HeaderTruncated, Value: strconv.AppendInt(nil, int64(dl.TruncatedFrom), 10)})
	}
	if dl.Dropped != "" {
		out = append(out, kafka.Header{Key: HeaderDropped, Value: []byte(dl.Dropped)})
	}
	return out
}

// reservedHeader reports whether key is one of the dead-letter headers'
// names, compared without case: Kafka header names are case-sensitive, but
// readers of dead letters are not always.
func reservedHeader(key string) bool {
	return hasPrefixFold(key, enricherHeaderPrefix) || hasPrefixFold(key, connectHeaderPrefix)
}

func hasPrefixFold(s, prefix string) bool {
	return len(s) >= len(prefix) && strings.EqualFold(s[:len(prefix)], prefix)
}
