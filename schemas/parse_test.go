package schemas_test

import (
	"bytes"
	"os"
	"strings"
	"sync"
	"testing"
	"time"
	"unsafe"

	"github.com/defender-enricher/defender-enricher/defender"
	"github.com/defender-enricher/defender-enricher/schemas"
)

const goodID = "da637472900382838869_1364969609"

// want is the part of an Event a table row checks. alert "" means the
// whole input; detail is a substring of Event.Detail.
type want struct {
	id     string
	alert  string
	skip   bool
	reject schemas.Reason
	detail string
	record int
}

func whole(r schemas.Reason, detail string) want { return want{reject: r, detail: detail, record: -1} }

func accepted(id, alert string) want { return want{id: id, alert: alert, record: -1} }

func deep(n int) string { return strings.Repeat("[", n) + strings.Repeat("]", n) }

func TestParse(t *testing.T) {
	longID := strings.Repeat("a", 10_000)
	tests := []struct {
		name string
		cfg  schemas.ParserConfig
		in   string
		want []want
	}{
		// Whole-message syntax.
		{name: "not JSON", in: "hello", want: []want{whole(schemas.ReasonInvalidJSON, `found 'h', want a value`)}},
		{name: "empty", in: "", want: []want{whole(schemas.ReasonInvalidJSON, "message is empty")}},
		{name: "only whitespace", in: " \n\t ", want: []want{whole(schemas.ReasonInvalidJSON, "only whitespace")}},
		{name: "truncated", in: `{"id":"` + goodID, want: []want{whole(schemas.ReasonInvalidJSON, "input ends")}},
		{name: "trailing garbage", in: `{"id":"` + goodID + `"} x`, want: []want{whole(schemas.ReasonInvalidJSON, "data after the top-level value")}},
		{name: "two values", in: `{"id":"a"}{"id":"b"}`, want: []want{whole(schemas.ReasonInvalidJSON, "at byte 10: data after")}},
		{name: "trailing comma", in: `{"id":"a",}`, want: []want{whole(schemas.ReasonInvalidJSON, "want a string key")}},
		{name: "single quotes", in: `{'id':'a'}`, want: []want{whole(schemas.ReasonInvalidJSON, "at byte 1")}},
		{name: "leading zero", in: `{"id":"a","n":01}`, want: []want{whole(schemas.ReasonInvalidJSON, "found '1'")}},
		{name: "truncated escape", in: `{"id":"a\u12`, want: []want{whole(schemas.ReasonInvalidJSON, "input ends at byte 12, want a hex digit")}},
		{name: "bad escape", in: `{"id":"a\x"}`, want: []want{whole(schemas.ReasonInvalidJSON, "invalid escape")}},
		{name: "raw newline in string", in: "{\"id\":\"a\nb\"}", want: []want{whole(schemas.ReasonInvalidJSON, "control character byte 0x0a")}},
		{name: "invalid UTF-8", in: "{\"id\":\"a\",\"t\":\"\xff\"}", want: []want{whole(schemas.ReasonInvalidJSON, "invalid UTF-8")}},
		{name: "BOM in the middle", in: " \xef\xbb\xbf{\"id\":\"a\"}", want: []want{whole(schemas.ReasonInvalidJSON, "byte 0xef")}},
		{name: "10000 levels", in: deep(10_000), want: []want{whole(schemas.ReasonInvalidJSON, "nested too deep at byte 64, more than 64 levels")}},
		{name: "10000 levels inside an alert", in: `{"id":"` + goodID + `","x":` + deep(10_000) + `}`, want: []want{whole(schemas.ReasonInvalidJSON, "too deep")}},
		{name: "10000 open objects", in: strings.Repeat(`{"a":`, 10_000), want: []want{whole(schemas.ReasonInvalidJSON, "too deep")}},
		{name: "65 levels", in: `{"id":"a","x":` + deep(64) + `}`, want: []want{whole(schemas.ReasonInvalidJSON, "too deep")}},
		{name: "64 levels", in: `{"id":"a","x":` + deep(63) + `}`, want: []want{accepted("a", "")}},
		{name: "custom depth", cfg: schemas.ParserConfig{MaxDepth: 2}, in: `{"id":"a","x":[[]]}`, want: []want{whole(schemas.ReasonInvalidJSON, "more than 2 levels")}},

		// Whole-message shape.
		{name: "array", in: "[]", want: []want{whole(schemas.ReasonNotObject, "message is an array, want an object")}},
		{name: "string", in: `"str"`, want: []want{whole(schemas.ReasonNotObject, "message is a string")}},
		{name: "number", in: `42`, want: []want{whole(schemas.ReasonNotObject, "message is a number")}},
		{name: "null", in: `null`, want: []want{whole(schemas.ReasonNotObject, "message is null")}},
		{name: "boolean", in: ` true `, want: []want{whole(schemas.ReasonNotObject, "message is a boolean")}},

		// Size.
		{name: "over MaxBytes", cfg: schemas.ParserConfig{MaxBytes: 20}, in: `{"id":"abcdefghijkl"}`, want: []want{whole(schemas.ReasonTooLarge, "message is 21 bytes, larger than the limit of 20")}},
		{name: "over MaxBytes and not JSON", cfg: schemas.ParserConfig{MaxBytes: 3}, in: `nope`, want: []want{whole(schemas.ReasonTooLarge, "4 bytes")}},
		{name: "at MaxBytes", cfg: schemas.ParserConfig{MaxBytes: 20}, in: `{"id":"abcdefghijk"}`, want: []want{accepted("abcdefghijk", "")}},

		// Form 1: the alerts API object.
		{name: "alert", in: `{"id":"` + goodID + `","severity":"Low"}`, want: []want{accepted(goodID, "")}},
		{name: "whitespace around", in: " \r\n\t{\"id\": \"" + goodID + "\" }\n", want: []want{accepted(goodID, `{"id": "`+goodID+`" }`)}},
		{name: "BOM", in: "\xef\xbb\xbf{\"id\":\"" + goodID + "\"}", want: []want{accepted(goodID, `{"id":"`+goodID+`"}`)}},
		{name: "negative id part", in: `{"id":"da637308392288907382_-880718168"}`, want: []want{accepted("da637308392288907382_-880718168", "")}},
		{name: "20-digit integer verbatim", in: `{"n":12345678901234567890,"f":1.0e+400,"z":-0.000,"id":"a"}`, want: []want{accepted("a", "")}},
		{name: "escaped id", in: `{"id":"da6\u0033` + goodID[4:] + `"}`, want: []want{accepted(goodID, "")}},
		{name: "all escaped id", in: `{"id":"\u0061\u005F\u002d"}`, want: []want{accepted("a_-", "")}},
		{name: "escaped key", in: `{"\u0069d":"abc"}`, want: []want{accepted("abc", "")}},
		{name: "key differs in case", in: `{"ID":"abc"}`, want: []want{whole(schemas.ReasonMissingAlertID, `no alert id at "/id"`)}},
		{name: "nested id is not top-level id", in: `{"x":{"id":"abc"}}`, want: []want{whole(schemas.ReasonMissingAlertID, `no alert id at "/id"`)}},
		{name: "duplicate id, last wins", in: `{"id":"a/b","id":"good"}`, want: []want{accepted("good", "")}},
		{name: "duplicate id, last bad", in: `{"id":"good","id":"a/b"}`, want: []want{whole(schemas.ReasonInvalidAlertID, `"a/b"`)}},
		{name: "id among strings with quotes", in: `{"t":"say \"id\":\"x\" \\","id":"abc"}`, want: []want{accepted("abc", "")}},

		// Missing and invalid ids.
		{name: "empty object", in: `{}`, want: []want{whole(schemas.ReasonMissingAlertID, `no alert id at "/id"`)}},
		{name: "id null", in: `{"id":null}`, want: []want{whole(schemas.ReasonMissingAlertID, `alert id at "/id" is null`)}},
		{name: "id number", in: `{"id":123}`, want: []want{whole(schemas.ReasonInvalidAlertID, `alert id at "/id" is a number, want a string`)}},
		{name: "id boolean", in: `{"id":true}`, want: []want{whole(schemas.ReasonInvalidAlertID, `is a boolean, want a string`)}},
		{name: "id object", in: `{"id":{"v":"a"}}`, want: []want{whole(schemas.ReasonInvalidAlertID, `is an object, want a string`)}},
		{name: "id array", in: `{"id":["a"]}`, want: []want{whole(schemas.ReasonInvalidAlertID, `is an array, want a string`)}},
		{name: "id empty", in: `{"id":""}`, want: []want{whole(schemas.ReasonInvalidAlertID, `is an empty string`)}},
		{name: "path traversal", in: `{"id":"../../machines"}`, want: []want{whole(schemas.ReasonInvalidAlertID, `alert id at "/id" is "../../machines", want 1 to 128 characters of A-Z a-z 0-9 _ -`)}},
		{name: "slash", in: `{"id":"a/b"}`, want: []want{whole(schemas.ReasonInvalidAlertID, `"a/b"`)}},
		{name: "escaped slash", in: `{"id":"a\/b"}`, want: []want{whole(schemas.ReasonInvalidAlertID, `"a/b"`)}},
		{name: "query", in: `{"id":"a?b=c"}`, want: []want{whole(schemas.ReasonInvalidAlertID, `"a?b=c"`)}},
		{name: "percent-encoded", in: `{"id":"a%2Fb"}`, want: []want{whole(schemas.ReasonInvalidAlertID, `"a%2Fb"`)}},
		{name: "space", in: `{"id":"a b"}`, want: []want{whole(schemas.ReasonInvalidAlertID, `"a b"`)}},
		{name: "non-ASCII", in: `{"id":"é"}`, want: []want{whole(schemas.ReasonInvalidAlertID, `"\u00e9"`)}},
		{name: "escaped non-ASCII", in: `{"id":"\u00e9"}`, want: []want{whole(schemas.ReasonInvalidAlertID, `"\u00e9"`)}},
		{name: "escaped NUL", in: `{"id":"a\u0000"}`, want: []want{whole(schemas.ReasonInvalidAlertID, `"a\x00"`)}},
		{name: "escaped newline", in: `{"id":"a\n"}`, want: []want{whole(schemas.ReasonInvalidAlertID, `"a\n"`)}},
		{name: "lone surrogate", in: `{"id":"a\ud800"}`, want: []want{whole(schemas.ReasonInvalidAlertID, `"a\ufffd"`)}},
		{name: "surrogate pair", in: `{"id":"a\ud83d\ude00"}`, want: []want{whole(schemas.ReasonInvalidAlertID, `"a\U0001f600"`)}},
		{name: "10000-char id", in: `{"id":"` + longID + `"}`, want: []want{whole(schemas.ReasonInvalidAlertID, `is 10000 bytes long, want at most 128`)}},
		{name: "129-char id", in: `{"id":"` + longID[:129] + `"}`, want: []want{whole(schemas.ReasonInvalidAlertID, `is 129 bytes long`)}},
		{name: "128-char id", in: `{"id":"` + longID[:128] + `"}`, want: []want{accepted(longID[:128], "")}},
		{name: "escaped long id", in: `{"id":"` + strings.Repeat(`\u0061`, 129) + `"}`, want: []want{whole(schemas.ReasonInvalidAlertID, `is 129 bytes long`)}},
		{name: "long invalid id is cut in the detail", in: `{"id":"` + strings.Repeat("a/", 60) + `"}`, want: []want{whole(schemas.ReasonInvalidAlertID, `is "a/a/a/a/a/a/a/a/a/a/a/a/a/a/a/a/"..., want`)}},

		// Form 3: custom pointers.
		{name: "nested pointer", cfg: schemas.ParserConfig{IDPointer: "/data/alertId"}, in: `{"data":{"alertId":"abc","x":1},"id":"zzz"}`, want: []want{accepted("abc", "")}},
		{name: "nested pointer missing", cfg: schemas.ParserConfig{IDPointer: "/data/alertId"}, in: `{"id":"abc"}`, want: []want{whole(schemas.ReasonMissingAlertID, `no alert id at "/data/alertId": "/data" not found`)}},
		{name: "nested pointer through a string", cfg: schemas.ParserConfig{IDPointer: "/data/alertId"}, in: `{"data":"abc"}`, want: []want{whole(schemas.ReasonMissingAlertID, `no alert id at "/data/alertId": "/data" is a string`)}},
		{name: "nested pointer through null", cfg: schemas.ParserConfig{IDPointer: "/data/alertId"}, in: `{"data":null}`, want: []want{whole(schemas.ReasonMissingAlertID, `"/data" is null`)}},
		{name: "nested pointer last missing", cfg: schemas.ParserConfig{IDPointer: "/data/alertId"}, in: `{"data":{}}`, want: []want{whole(schemas.ReasonMissingAlertID, `no alert id at "/data/alertId"`)}},
		{name: "nested pointer number", cfg: schemas.ParserConfig{IDPointer: "/data/alertId"}, in: `{"data":{"alertId":7}}`, want: []want{whole(schemas.ReasonInvalidAlertID, `alert id at "/data/alertId" is a number, want a string`)}},
		{name: "array index", cfg: schemas.ParserConfig{IDPointer: "/alerts/0/id"}, in: `{"alerts":[{"id":"first"},{"id":"second"}]}`, want: []want{accepted("first", "")}},
		{name: "array index 1", cfg: schemas.ParserConfig{IDPointer: "/alerts/1/id"}, in: `{"alerts":[{"id":"first"} , {"id":"second"}]}`, want: []want{accepted("second", "")}},
		{name: "array index out of range", cfg: schemas.ParserConfig{IDPointer: "/alerts/2/id"}, in: `{"alerts":[{"id":"first"},{"id":"second"}]}`, want: []want{whole(schemas.ReasonMissingAlertID, `"/alerts/2" not found`)}},
		{name: "array index leading zero", cfg: schemas.ParserConfig{IDPointer: "/alerts/00/id"}, in: `{"alerts":[{"id":"first"}]}`, want: []want{whole(schemas.ReasonMissingAlertID, `"/alerts/00" not found`)}},
		{name: "array index dash", cfg: schemas.ParserConfig{IDPointer: "/alerts/-/id"}, in: `{"alerts":[{"id":"first"}]}`, want: []want{whole(schemas.ReasonMissingAlertID, `"/alerts/-" not found`)}},
		{name: "array index huge", cfg: schemas.ParserConfig{IDPointer: "/alerts/99999999999999999999999/id"}, in: `{"alerts":[{"id":"first"}]}`, want: []want{whole(schemas.ReasonMissingAlertID, `not found`)}},
		{name: "numeric key in an object", cfg: schemas.ParserConfig{IDPointer: "/alerts/0/id"}, in: `{"alerts":{"0":{"id":"k"}}}`, want: []want{accepted("k", "")}},
		{name: "top-level array index", cfg: schemas.ParserConfig{IDPointer: "/0"}, in: `["abc"]`, want: []want{whole(schemas.ReasonNotObject, "array")}},
		{name: "escaped pointer", cfg: schemas.ParserConfig{IDPointer: "/a~1b/c~0d"}, in: `{"a/b":{"c~d":"abc"}}`, want: []want{accepted("abc", "")}},
		{name: "escaped pointer and key", cfg: schemas.ParserConfig{IDPointer: "/a~1b"}, in: `{"a\/b":"abc"}`, want: []want{accepted("abc", "")}},
		{name: "pointer ~01", cfg: schemas.ParserConfig{IDPointer: "/~01"}, in: `{"~1":"abc","/":"no"}`, want: []want{accepted("abc", "")}},
		{name: "empty key", cfg: schemas.ParserConfig{IDPointer: "/"}, in: `{"":"abc"}`, want: []want{accepted("abc", "")}},
		{name: "non-ASCII key", cfg: schemas.ParserConfig{IDPointer: "/données/id"}, in: `{"donn\u00e9es":{"id":"abc"}}`, want: []want{accepted("abc", "")}},
		{name: "pointer into records object", cfg: schemas.ParserConfig{IDPointer: "/records/id"}, in: `{"records":{"id":"abc"}}`, want: []want{accepted("abc", "")}},

		// Form 2: the streaming-API envelope.
		{name: "envelope", in: `{"records":[` + rec("a1", `"Microsoft Defender for Endpoint"`) + `,` + rec("a2", `"MicrosoftDefenderForEndpoint"`) + `]}`,
			want: []want{{id: "a1", alert: rec("a1", `"Microsoft Defender for Endpoint"`), record: 0}, {id: "a2", alert: rec("a2", `"MicrosoftDefenderForEndpoint"`), record: 1}}},
		{name: "envelope good and bad", in: `{"records":[ ` + rec("a1", "") + ` , ` + rec("a/b", "") + ` ]}`,
			want: []want{{id: "a1", alert: rec("a1", ""), record: 0}, {alert: rec("a/b", ""), reject: schemas.ReasonInvalidAlertID, detail: `record 1: alert id at "/properties/AlertId" is "a/b"`, record: 1}}},
		{name: "envelope non-MDE record", in: `{"records":[` + rec("fa2f35fe4e-0aa7", `"Microsoft Defender for Office 365"`) + `,` + rec("a2", `"microsoft DEFENDER for endpoint"`) + `]}`,
			want: []want{{id: "fa2f35fe4e-0aa7", alert: rec("fa2f35fe4e-0aa7", `"Microsoft Defender for Office 365"`), skip: true, record: 0}, {id: "a2", alert: rec("a2", `"microsoft DEFENDER for endpoint"`), record: 1}}},
		{name: "envelope skipped record with a bad id", in: `{"records":[` + rec("a b", `"Microsoft Entra ID Protection"`) + `]}`,
			want: []want{{alert: rec("a b", `"Microsoft Entra ID Protection"`), reject: schemas.ReasonInvalidAlertID, detail: "record 0:", record: 0}}},
		{name: "envelope ServiceSource variants", in: `{"records":[` + strings.Join([]string{
			rec("s0", `null`), rec("s1", `""`), rec("s2", `"Microsoft Defender for \u0045ndpoint"`), rec("s3", `42`),
			rec("s4", `"Microsoft Defender for Endpoint "`), rec("s5", `"Micro\u017Foft Defender for Endpoint"`),
			rec("s6", `"`+strings.Repeat("x", 200)+`"`),
		}, ",") + `]}`,
			want: []want{
				{id: "s0", alert: rec("s0", `null`), record: 0},
				{id: "s1", alert: rec("s1", `""`), record: 1},
				{id: "s2", alert: rec("s2", `"Microsoft Defender for \u0045ndpoint"`), record: 2},
				{id: "s3", alert: rec("s3", `42`), skip: true, record: 3},
				{id: "s4", alert: rec("s4", `"Microsoft Defender for Endpoint "`), skip: true, record: 4},
				{id: "s5", alert: rec("s5", `"Micro\u017Foft Defender for Endpoint"`), skip: true, record: 5},
				{id: "s6", alert: rec("s6", `"`+strings.Repeat("x", 200)+`"`), skip: true, record: 6},
			}},
		{name: "envelope record not an object", in: `{"records":[7,"x",` + rec("a1", "") + `,null]}`,
			want: []want{
				{alert: "7", reject: schemas.ReasonNotObject, detail: "record 0: record is a number, want an object", record: 0},
				{alert: `"x"`, reject: schemas.ReasonNotObject, detail: "record 1: record is a string", record: 1},
				{id: "a1", alert: rec("a1", ""), record: 2},
				{alert: "null", reject: schemas.ReasonNotObject, detail: "record 3: record is null", record: 3},
			}},
		{name: "envelope record problems", in: `{"records":[{},{"properties":[]},{"properties":{}},{"properties":{"AlertId":null}},{"properties":{"AlertId":5}},{"properties":{"alertid":"x"}}]}`,
			want: []want{
				{alert: `{}`, reject: schemas.ReasonMissingAlertID, detail: `record 0: no alert id at "/properties/AlertId": "/properties" not found`, record: 0},
				{alert: `{"properties":[]}`, reject: schemas.ReasonMissingAlertID, detail: `record 1: no alert id at "/properties/AlertId": "/properties" is an array`, record: 1},
				{alert: `{"properties":{}}`, reject: schemas.ReasonMissingAlertID, detail: `record 2: no alert id at "/properties/AlertId"`, record: 2},
				{alert: `{"properties":{"AlertId":null}}`, reject: schemas.ReasonMissingAlertID, detail: `record 3: alert id at "/properties/AlertId" is null`, record: 3},
				{alert: `{"properties":{"AlertId":5}}`, reject: schemas.ReasonInvalidAlertID, detail: `record 4: alert id at "/properties/AlertId" is a number, want a string`, record: 4},
				{alert: `{"properties":{"alertid":"x"}}`, reject: schemas.ReasonMissingAlertID, detail: `record 5:`, record: 5},
			}},
		{name: "envelope with no records", in: `{"records":[]}`, want: []want{whole(schemas.ReasonEmptyEnvelope, "no records")}},
		{name: "envelope with no records, spaced", in: `{"records":[ ],"time":"x"}`, want: []want{whole(schemas.ReasonEmptyEnvelope, "no records")}},
		{name: "alert with an empty records array", in: `{"id":"` + goodID + `","title":"x","records":[]}`, want: []want{accepted(goodID, "")}},
		{name: "alert with a records array", in: `{"records":[` + rec("a1", "") + `],"id":"abc"}`, want: []want{accepted("abc", "")}},
		{name: "invalid id beside records is a plain object", in: `{"id":5,"records":[` + rec("a1", "") + `]}`, want: []want{whole(schemas.ReasonInvalidAlertID, "is a number")}},
		{name: "null id beside records is an envelope", in: `{"id":null,"records":[` + rec("a1", "") + `]}`, want: []want{{id: "a1", alert: rec("a1", ""), record: 0}}},
		{name: "envelope at the record limit", cfg: schemas.ParserConfig{MaxRecords: 2}, in: `{"records":[` + rec("a1", "") + `,` + rec("a2", "") + `]}`,
			want: []want{{id: "a1", alert: rec("a1", ""), record: 0}, {id: "a2", alert: rec("a2", ""), record: 1}}},
		{name: "envelope over the record limit", cfg: schemas.ParserConfig{MaxRecords: 2}, in: `{"records":[` + rec("a1", "") + `,` + rec("a2", "") + `,1]}`,
			want: []want{whole(schemas.ReasonTooManyRecords, "more than 2 records")}},
		{name: "envelope of numbers over the default limit", in: `{"records":[` + strings.TrimSuffix(strings.Repeat("1,", 1001), ",") + `]}`,
			want: []want{whole(schemas.ReasonTooManyRecords, "more than 1000 records, the limit (ENRICHER_MAX_RECORDS)")}},
		{name: "envelope ignores the pointer", cfg: schemas.ParserConfig{IDPointer: "/data/alertId"}, in: `{"records":[` + rec("a1", "") + `]}`,
			want: []want{{id: "a1", alert: rec("a1", ""), record: 0}}},
		{name: "records not an array is a plain object", in: `{"records":{"a":[]},"id":"abc"}`, want: []want{accepted("abc", "")}},
		{name: "records null", in: `{"records":null}`, want: []want{whole(schemas.ReasonMissingAlertID, `no alert id at "/id"`)}},
		{name: "duplicate records, last wins", in: `{"records":[` + rec("a1", "") + `],"records":"none","id":"abc"}`, want: []want{accepted("abc", "")}},
		{name: "duplicate properties, last wins", in: `{"records":[{"properties":{"AlertId":"old"},"properties":{"AlertId":"new","AlertId":"newest"}}]}`,
			want: []want{{id: "newest", alert: `{"properties":{"AlertId":"old"},"properties":{"AlertId":"new","AlertId":"newest"}}`, record: 0}}},
		{name: "envelope record with deep values", in: `{"records":[{"properties":{"x":[[{"a":"]}"}]],"AlertId":"a1"}}]}`,
			want: []want{{id: "a1", alert: `{"properties":{"x":[[{"a":"]}"}]],"AlertId":"a1"}}`, record: 0}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := schemas.NewParser(tt.cfg)
			if err != nil {
				t.Fatal(err)
			}
			in := []byte(tt.in)
			got := p.Parse(in, nil)
			if len(got) != len(tt.want) {
				t.Fatalf("got %d events, want %d: %+v", len(got), len(tt.want), got)
			}
			for i, w := range tt.want {
				g := got[i]
				checkEvent(t, in, g)
				wantAlert := w.alert
				if wantAlert == "" {
					wantAlert = strings.TrimSpace(strings.TrimPrefix(tt.in, "\xef\xbb\xbf"))
					if w.reject != "" {
						wantAlert = tt.in
					}
				}
				if g.AlertID != w.id || g.Skip != w.skip || g.Reject != w.reject || g.Record != w.record || string(g.Alert) != wantAlert {
					t.Errorf("event %d = {AlertID:%q Skip:%v Reject:%q Record:%d Alert:%.80q}, want {AlertID:%q Skip:%v Reject:%q Record:%d Alert:%.80q}",
						i, g.AlertID, g.Skip, g.Reject, g.Record, g.Alert, w.id, w.skip, w.reject, w.record, wantAlert)
				}
				if !strings.Contains(g.Detail, w.detail) {
					t.Errorf("event %d detail = %q, want it to contain %q", i, g.Detail, w.detail)
				}
				if w.reject == "" && g.Detail != "" {
					t.Errorf("event %d: accepted event has detail %q", i, g.Detail)
				}
			}
		})
	}
}

// rec is a streaming-API record; source "" leaves ServiceSource out.
func rec(id, source string) string {
	props := `"AlertId":"` + id + `","Title":"t"`
	if source != "" {
		props += `,"ServiceSource":` + source
	}
	return `{"time":"2024-03-12T10:15:43.0000000Z","operationName":"Publish","category":"AdvancedHunting-AlertInfo","properties":{` + props + `}}`
}

// checkEvent checks what holds for every event of every input.
func checkEvent(t testing.TB, in []byte, e schemas.Event) {
	t.Helper()
	if !isSubslice(in, e.Alert) {
		t.Errorf("Alert %.40q is not a subslice of the input", e.Alert)
	}
	switch {
	case e.Reject != "":
		if e.AlertID != "" || e.Skip || e.Detail == "" {
			t.Errorf("rejected event has AlertID %q, Skip %v, Detail %q", e.AlertID, e.Skip, e.Detail)
		}
		if len(e.Detail) > 200 {
			t.Errorf("detail is %d bytes long: %.80q", len(e.Detail), e.Detail)
		}
	case !defender.ValidAlertID(e.AlertID):
		t.Errorf("accepted event has invalid AlertID %q", e.AlertID)
	}
	if e.Record < -1 {
		t.Errorf("Record = %d", e.Record)
	}
}

func isSubslice(outer, inner []byte) bool {
	if len(inner) == 0 {
		return len(outer) == 0
	}
	if len(outer) == 0 {
		return false
	}
	o := uintptr(unsafe.Pointer(unsafe.SliceData(outer)))
	i := uintptr(unsafe.Pointer(unsafe.SliceData(inner)))
	return i >= o && i+uintptr(len(inner)) <= o+uintptr(len(outer))
}

func TestParseAppends(t *testing.T) {
	p := mustParser(t, schemas.ParserConfig{})
	dst := make([]schemas.Event, 0, 8)
	dst = p.Parse([]byte(`{"id":"one"}`), dst)
	dst = p.Parse([]byte(`{"records":[`+rec("two", "")+`,`+rec("three", "")+`]}`), dst)
	dst = p.Parse([]byte(`{"records":[]}`), dst)
	var ids []string
	for _, e := range dst {
		ids = append(ids, e.AlertID+string(e.Reject))
	}
	if got := strings.Join(ids, ","); got != "one,two,three,empty_envelope" {
		t.Fatalf("ids = %s", got)
	}
}

func TestParseSamples(t *testing.T) {
	p := mustParser(t, schemas.ParserConfig{})

	alert := readFile(t, "testdata/alert.json")
	evs := p.Parse(alert, nil)
	if len(evs) != 1 || evs[0].Reject != "" || evs[0].AlertID != "da637472900382838869_1364969609" {
		t.Fatalf("alert: %+v", evs)
	}
	if !bytes.Equal(evs[0].Alert, bytes.TrimSpace(alert)) {
		t.Errorf("alert bytes changed")
	}

	env := readFile(t, "testdata/streaming-envelope.json")
	evs = p.Parse(env, nil)
	if len(evs) != 3 {
		t.Fatalf("envelope: %d events", len(evs))
	}
	for i, w := range []struct {
		id   string
		skip bool
	}{{"da638458473376270421_-1259470431", false}, {"da638458473376270421_-1259470431", false}, {"fa2f35fe4e-0aa7-4fcd-b5b1-4edc5c1ab8c1", true}} {
		e := evs[i]
		if e.Reject != "" || e.AlertID != w.id || e.Skip != w.skip || e.Record != i {
			t.Errorf("record %d: %+v", i, e)
		}
		checkEvent(t, env, e)
	}
}

func TestParseDeepIsFast(t *testing.T) {
	p := mustParser(t, schemas.ParserConfig{})
	// Neither a million open brackets nor a wide, shallow message may
	// cost more than a linear scan.
	for _, in := range [][]byte{
		bytes.Repeat([]byte("["), 999_999),
		[]byte(`{"id":"a","x":[` + strings.Repeat(`[[1,{"a":"b"}]],`, 60_000) + `0]}`),
	} {
		start := time.Now()
		evs := p.Parse(in, nil)
		if d := time.Since(start); d > 2*time.Second {
			t.Errorf("Parse of %d bytes took %v", len(in), d)
		}
		if len(evs) != 1 {
			t.Fatalf("got %d events", len(evs))
		}
	}
}

func TestParseConcurrent(t *testing.T) {
	p := mustParser(t, schemas.ParserConfig{IDPointer: "/data/alertId"})
	inputs := [][]byte{
		[]byte(`{"data":{"alertId":"abc"}}`),
		[]byte(`{"records":[` + rec("a1", "") + `,` + rec("a/b", "") + `]}`),
		[]byte(`{"data":{"alertId":"a b"}}`),
		[]byte(`[`),
	}
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var dst []schemas.Event
			for i := 0; i < 200; i++ {
				in := inputs[(g+i)%len(inputs)]
				dst = p.Parse(in, dst[:0])
				for _, e := range dst {
					checkEvent(t, in, e)
				}
			}
		}()
	}
	wg.Wait()
}

func TestParseAllocations(t *testing.T) {
	p := mustParser(t, schemas.ParserConfig{})
	alert := readFile(t, "testdata/alert.json")
	env := readFile(t, "testdata/streaming-envelope.json")
	dst := make([]schemas.Event, 0, 8)
	if n := testing.AllocsPerRun(100, func() { dst = p.Parse(alert, dst[:0]) }); n > 1 {
		t.Errorf("Parse(alert) allocates %v times, want at most 1", n)
	}
	if n := testing.AllocsPerRun(100, func() { dst = p.Parse(env, dst[:0]) }); n > 3 {
		t.Errorf("Parse(3-record envelope) allocates %v times, want at most 3", n)
	}
}

func TestNewParser(t *testing.T) {
	for _, cfg := range []schemas.ParserConfig{
		{IDPointer: "id"},
		{IDPointer: "#/id"},
		{IDPointer: "/a~2b"},
		{IDPointer: "/a~"},
		{IDPointer: "/a\xffb"},
		{MaxBytes: -1},
		{MaxDepth: -1},
		{MaxDepth: schemas.MaxDepthLimit + 1},
	} {
		if _, err := schemas.NewParser(cfg); err == nil {
			t.Errorf("NewParser(%+v) succeeded", cfg)
		}
	}
	for _, cfg := range []schemas.ParserConfig{
		{},
		{IDPointer: "/"},
		{IDPointer: "//"},
		{IDPointer: "/a~0~1b/0/-"},
		{MaxDepth: schemas.MaxDepthLimit, MaxBytes: 1},
	} {
		if _, err := schemas.NewParser(cfg); err != nil {
			t.Errorf("NewParser(%+v): %v", cfg, err)
		}
	}
	_, err := schemas.NewParser(schemas.ParserConfig{IDPointer: "id"})
	if want := `schemas: alert id pointer "id": must start with "/"`; err == nil || err.Error() != want {
		t.Errorf("error = %v, want %s", err, want)
	}
}

func TestMaxDepthLimit(t *testing.T) {
	p := mustParser(t, schemas.ParserConfig{MaxDepth: schemas.MaxDepthLimit})
	ok := `{"id":"a","x":` + deep(schemas.MaxDepthLimit-1) + `}`
	if evs := p.Parse([]byte(ok), nil); evs[0].Reject != "" {
		t.Errorf("%d levels: %s", schemas.MaxDepthLimit, evs[0].Detail)
	}
	bad := `{"id":"a","x":` + deep(schemas.MaxDepthLimit) + `}`
	if evs := p.Parse([]byte(bad), nil); evs[0].Reject != schemas.ReasonInvalidJSON {
		t.Errorf("%d levels: %+v", schemas.MaxDepthLimit+1, evs[0].Reject)
	}
}

func mustParser(t testing.TB, cfg schemas.ParserConfig) *schemas.Parser {
	t.Helper()
	p, err := schemas.NewParser(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func readFile(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
