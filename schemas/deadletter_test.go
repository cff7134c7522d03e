package schemas_test

import (
	"fmt"
	"testing"

	"github.com/segmentio/kafka-go"

	"github.com/defender-enricher/defender-enricher/schemas"
)

func TestDeadLetterHeaders(t *testing.T) {
	origin := schemas.Origin{Topic: "in", Partition: 3, Offset: 42}
	h := func(k, v string) kafka.Header { return kafka.Header{Key: k, Value: []byte(v)} }
	base := []string{"enricher.error.reason=invalid_json", "enricher.error.message=bad", "__connect.errors.topic=in", "__connect.errors.partition=3", "__connect.errors.offset=42"}
	tests := []struct {
		name string
		in   []kafka.Header
		dl   schemas.DeadLetter
		want []string
	}{
		{name: "no input headers", dl: schemas.DeadLetter{Reason: schemas.ReasonInvalidJSON, Detail: "bad", Origin: origin, Record: -1}, want: base},
		{name: "input headers first, in order", in: []kafka.Header{h("b", "2"), h("a", "1")},
			dl:   schemas.DeadLetter{Reason: schemas.ReasonInvalidJSON, Detail: "bad", Origin: origin, Record: -1},
			want: append([]string{"b=2", "a=1"}, base...)},
		{name: "reserved input headers dropped, any case",
			in:   []kafka.Header{h("enricher.error.reason", "forged"), h("x", "1"), h("__CONNECT.ERRORS.OFFSET", "0"), h("Enricher.Error.Truncated", "9"), h("enricher.errors", "kept")},
			dl:   schemas.DeadLetter{Reason: schemas.ReasonInvalidJSON, Detail: "bad", Origin: origin, Record: -1},
			want: append([]string{"x=1", "enricher.errors=kept"}, base...)},
		{name: "record, truncated, dropped",
			dl:   schemas.DeadLetter{Reason: schemas.ReasonInvalidJSON, Detail: "bad", Origin: origin, Record: 7, TruncatedFrom: 2_000_000, Dropped: "headers"},
			want: append(append([]string{}, base...), "enricher.error.record=7", "enricher.error.truncated=2000000", "enricher.error.dropped=headers")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := append([]kafka.Header(nil), tt.in...)
			got := schemas.DeadLetterHeaders(in, tt.dl)
			if fmt.Sprint(pairs(got)) != fmt.Sprint(tt.want) {
				t.Fatalf("headers\n got %v\nwant %v", pairs(got), tt.want)
			}
			if fmt.Sprint(pairs(in)) != fmt.Sprint(pairs(tt.in)) {
				t.Fatal("the input headers were changed")
			}
		})
	}
}

func pairs(hs []kafka.Header) []string {
	out := make([]string, 0, len(hs))
	for _, h := range hs {
		out = append(out, h.Key+"="+string(h.Value))
	}
	return out
}
