package schemas_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/defender-enricher/defender-enricher/defender"
	"github.com/defender-enricher/defender-enricher/schemas"
)

const (
	sid1 = "S-1-5-21-72051607-1745760036-109187956-93922"
	sid2 = "S-1-5-21-72051607-1745760036-109187956-93923"
)

// userEvidence is an alert object's evidence entry of a User, with the
// fields given (JSON values), the others null as the API sends them.
func userEvidence(name, domain, sid string) string {
	return `{"entityType":"User","evidenceCreationTime":"2021-01-26T20:33:58.42Z","sha1":null,"fileName":null,` +
		`"accountName":` + name + `,"domainName":` + domain + `,"userSid":` + sid +
		`,"aadUserId":null,"userPrincipalName":null,"detectionStatus":null}`
}

const processEvidence = `{"entityType":"Process","fileName":"rundll32.exe","processId":3276,` +
	`"accountName":"other","domainName":"contoso","userSid":"` + sid2 + `","aadUserId":null,"userPrincipalName":null}`

func alertWith(fields string) string {
	return `{"id":"da637472900382838869_1364969609","severity":"High","title":"Suspicious process",` + fields + `}`
}

func TestReadHintsAlert(t *testing.T) {
	t.Parallel()
	user1 := defender.UserRef{Domain: "contoso", Name: "user1"}
	user1SID := defender.UserRef{SID: sid1, Domain: "contoso", Name: "user1"}
	long := strings.Repeat("a", schemas.MaxHintBytes)
	tests := []struct {
		name     string
		alert    string
		severity string
		user     defender.UserRef
	}{
		{"relatedUser", alertWith(`"relatedUser":{"userName":"user1","domainName":"contoso"}`), "High", user1},
		{"relatedUser and its evidence", alertWith(`"relatedUser":{"userName":"user1","domainName":"contoso"},"evidence":[` +
			processEvidence + `,` + userEvidence(`"user1"`, `"contoso"`, `"`+sid1+`"`) + `]`), "High", user1SID},
		{"relatedUser and its evidence in other cases", alertWith(`"relatedUser":{"userName":"User1","domainName":"CONTOSO"},"evidence":[` +
			userEvidence(`"user1"`, `"contoso"`, `"`+sid1+`"`) + `]`), "High", defender.UserRef{SID: sid1, Domain: "CONTOSO", Name: "User1"}},
		{"evidence before relatedUser", alertWith(`"evidence":[` + userEvidence(`"user1"`, `"contoso"`, `"`+sid1+`"`) +
			`],"relatedUser":{"userName":"user1","domainName":"contoso"}`), "High", user1SID},
		{"evidence with a SID only", alertWith(`"evidence":[` + userEvidence(`null`, `null`, `"`+sid1+`"`) + `]`), "High", defender.UserRef{SID: sid1}},
		{"evidence with a domain only and a SID", alertWith(`"evidence":[` + userEvidence(`null`, `"contoso"`, `"`+sid1+`"`) + `]`), "High", defender.UserRef{SID: sid1}},
		{"one user in two evidence entries", alertWith(`"evidence":[` + userEvidence(`null`, `null`, `"`+sid1+`"`) + `,` +
			userEvidence(`"user1"`, `"contoso"`, `"`+strings.ToLower(sid1)+`"`) + `]`), "High", user1SID},
		{"a SID and a name joined by a third mention", alertWith(`"relatedUser":{"userName":"user1","domainName":"contoso"},"evidence":[` +
			userEvidence(`null`, `null`, `"`+sid1+`"`) + `,` + userEvidence(`"user1"`, `"contoso"`, `"`+sid1+`"`) + `]`), "High", user1SID},
		{"a SID and a name never joined", alertWith(`"relatedUser":{"userName":"user1","domainName":"contoso"},"evidence":[` +
			userEvidence(`null`, `null`, `"`+sid1+`"`) + `]`), "High", defender.UserRef{}},
		{"the same user a thousand times", alertWith(`"evidence":[` + strings.Repeat(userEvidence(`"user1"`, `"contoso"`, `"`+sid1+`"`)+`,`, 999) +
			userEvidence(`"user1"`, `"contoso"`, `"`+sid1+`"`) + `]`), "High", user1SID},
		{"a process's account is no user", alertWith(`"relatedUser":{"userName":"user1","domainName":"contoso"},"evidence":[` + processEvidence + `]`), "High", user1},
		{"entityType in another case", alertWith(`"evidence":[` + strings.Replace(userEvidence(`"user1"`, `"contoso"`, `null`), `"User"`, `"user"`, 1) + `]`), "High", user1},
		{"entityType escaped", alertWith(`"evidence":[` + strings.Replace(userEvidence(`"user1"`, `"contoso"`, `null`), `"User"`, `"\u0055ser"`, 1) + `]`), "High", user1},
		{"escaped names", alertWith(`"relatedUser":{"userName":"us\u0065r1","domainName":"cont\u006fso"}`), "High", user1},
		{"non-ASCII names", alertWith(`"relatedUser":{"userName":"åsa","domainName":"contoso"}`), "High", defender.UserRef{Domain: "contoso", Name: "åsa"}},
		{"a name of the longest length read", alertWith(`"relatedUser":{"userName":"` + long + `","domainName":"contoso"}`), "High", defender.UserRef{Domain: "contoso", Name: long}},
		{"the last of a repeated key", alertWith(`"relatedUser":{"userName":"other","domainName":"contoso","userName":"user1"}`), "High", user1},
		{"relatedUser with nulls, a user in evidence", alertWith(`"relatedUser":{"userName":null,"domainName":null},"evidence":[` +
			userEvidence(`"user1"`, `"contoso"`, `"`+sid1+`"`) + `]`), "High", user1SID},
		{"relatedUser empty, a user in evidence", alertWith(`"relatedUser":{"userName":"","domainName":""},"evidence":[` +
			userEvidence(`"user1"`, `"contoso"`, `""`) + `]`), "High", user1},
		{"evidence not an entity is left out", alertWith(`"relatedUser":{"userName":"user1","domainName":"contoso"},"evidence":["User",7,null,[]]`), "High", user1},

		// No user: none, several, or one that cannot be told.
		{"the documented alert names two users", string(readFile(t, "testdata/alert.json")), "Low", defender.UserRef{}},
		{"no user", alertWith(`"relatedUser":null,"evidence":[]`), "High", defender.UserRef{}},
		{"relatedUser empty", alertWith(`"relatedUser":{}`), "High", defender.UserRef{}},
		{"relatedUser and evidence disagree", alertWith(`"relatedUser":{"userName":"user1","domainName":"contoso"},"evidence":[` +
			userEvidence(`"user2"`, `"contoso"`, `"`+sid1+`"`) + `]`), "High", defender.UserRef{}},
		{"two users in evidence", alertWith(`"evidence":[` + userEvidence(`"user1"`, `"contoso"`, `"`+sid1+`"`) + `,` +
			userEvidence(`"user2"`, `"contoso"`, `"`+sid2+`"`) + `]`), "High", defender.UserRef{}},
		{"one name, two SIDs", alertWith(`"relatedUser":{"userName":"user1","domainName":"contoso"},"evidence":[` +
			userEvidence(`"user1"`, `"contoso"`, `"`+sid1+`"`) + `,` + userEvidence(`"user1"`, `"contoso"`, `"`+sid2+`"`) + `]`), "High", defender.UserRef{}},
		{"one SID, two names", alertWith(`"evidence":[` + userEvidence(`"user1"`, `"contoso"`, `"`+sid1+`"`) + `,` +
			userEvidence(`"user2"`, `"contoso"`, `"`+sid1+`"`) + `]`), "High", defender.UserRef{}},
		{"same name, other domain", alertWith(`"relatedUser":{"userName":"user1","domainName":"contoso"},"evidence":[` +
			userEvidence(`"user1"`, `"contoso.com"`, `null`) + `]`), "High", defender.UserRef{}},
		{"a name without a domain", alertWith(`"relatedUser":{"userName":"user1","domainName":null}`), "High", defender.UserRef{}},
		{"a domain without a name", alertWith(`"relatedUser":{"domainName":"contoso"}`), "High", defender.UserRef{}},
		{"a name without a domain next to a user", alertWith(`"relatedUser":{"userName":"user1"},"evidence":[` +
			userEvidence(`"user1"`, `"contoso"`, `"`+sid1+`"`) + `]`), "High", defender.UserRef{}},
		{"a User entity known by its UPN only", alertWith(`"relatedUser":{"userName":"user1","domainName":"contoso"},"evidence":[` +
			strings.Replace(userEvidence(`null`, `null`, `null`), `"userPrincipalName":null`, `"userPrincipalName":"user2@contoso.com"`, 1) + `]`), "High", defender.UserRef{}},
		{"a User entity known by nothing", alertWith(`"relatedUser":{"userName":"user1","domainName":"contoso"},"evidence":[` +
			userEvidence(`null`, `null`, `null`) + `]`), "High", user1},
		{"userName a number", alertWith(`"relatedUser":{"userName":1,"domainName":"contoso"}`), "High", defender.UserRef{}},
		{"userSid an object", alertWith(`"relatedUser":{"userName":"user1","domainName":"contoso"},"evidence":[` +
			userEvidence(`"user1"`, `"contoso"`, `{"value":"`+sid1+`"}`) + `]`), "High", defender.UserRef{}},
		{"relatedUser a string", alertWith(`"relatedUser":"contoso\\user1"`), "High", defender.UserRef{}},
		{"relatedUser an array", alertWith(`"relatedUser":[{"userName":"user1","domainName":"contoso"}]`), "High", defender.UserRef{}},
		{"evidence an object", alertWith(`"relatedUser":{"userName":"user1","domainName":"contoso"},"evidence":{"entityType":"User"}`), "High", defender.UserRef{}},
		{"a name too long", alertWith(`"relatedUser":{"userName":"` + long + `a","domainName":"contoso"}`), "High", defender.UserRef{}},
		{"a name too long in escapes", alertWith(`"relatedUser":{"userName":"` + strings.Repeat(`\u00e5`, schemas.MaxHintBytes/2+1) + `","domainName":"contoso"}`), "High", defender.UserRef{}},
		{"nine users", alertWith(`"evidence":[` + nineUsers() + `]`), "High", defender.UserRef{}},

		// Severity.
		{"severity null", `{"id":"a","severity":null}`, "", defender.UserRef{}},
		{"severity a number", `{"id":"a","severity":3}`, "", defender.UserRef{}},
		{"severity escaped", `{"id":"a","severity":"Medi\u0075m"}`, "Medium", defender.UserRef{}},
		{"severity too long", `{"id":"a","severity":"` + long + `x"}`, "", defender.UserRef{}},
		{"Severity is a record's", `{"id":"a","Severity":"High"}`, "", defender.UserRef{}},
		{"byte order mark and white space", "\xef\xbb\xbf \n" + alertWith(`"relatedUser":{"userName":"user1","domainName":"contoso"}`) + "\n", "High", user1},

		// Not an alert object.
		{"not JSON", `{"id":"a","severity":"High",`, "", defender.UserRef{}},
		{"not an object", `[{"severity":"High"}]`, "", defender.UserRef{}},
		{"empty", ``, "", defender.UserRef{}},
		{"invalid UTF-8", "{\"severity\":\"High\",\"x\":\"\xff\"}", "", defender.UserRef{}},
		{"too deep", `{"severity":"High","x":` + strings.Repeat("[", schemas.MaxDepthLimit) + strings.Repeat("]", schemas.MaxDepthLimit) + `}`, "", defender.UserRef{}},
		{"a record read as an alert", `{"properties":{"Severity":"High","EntityType":"User","AccountSid":"` + sid1 + `"}}`, "", defender.UserRef{}},
	}
	for _, tt := range tests {
		h := schemas.ReadHints([]byte(tt.alert), false)
		if h.Severity != tt.severity || h.User != tt.user {
			t.Errorf("%s: ReadHints = %+v, want severity %q, user %+v", tt.name, h, tt.severity, tt.user)
		}
	}
}

func nineUsers() string {
	var parts []string
	for i := range 9 {
		parts = append(parts, userEvidence(fmt.Sprintf(`"user%d"`, i), `"contoso"`, fmt.Sprintf(`"S-1-5-21-1-2-3-%d"`, 1000+i)))
	}
	return strings.Join(parts, ",")
}

// evidenceRecord is an AlertEvidence record with the properties given.
func evidenceRecord(props string) string {
	return `{"time":"2024-03-12T10:15:43.0000000Z","category":"AdvancedHunting-AlertEvidence","properties":{` +
		`"AlertId":"da638458473376270421_-1259470431","ServiceSource":"Microsoft Defender for Endpoint",` + props + `}}`
}

func TestReadHintsRecord(t *testing.T) {
	t.Parallel()
	var env struct{ Records []json.RawMessage }
	if err := json.Unmarshal(readFile(t, "testdata/streaming-envelope.json"), &env); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name     string
		record   string
		severity string
		user     defender.UserRef
	}{
		{"the documented AlertInfo row", string(env.Records[0]), "Medium", defender.UserRef{}},
		{"the documented AlertEvidence row of a user", string(env.Records[1]), "", defender.UserRef{SID: sid1, Domain: "contoso", Name: "user1"}},
		{"the documented row of another service", string(env.Records[2]), "Informational", defender.UserRef{}},
		{"a user by SID only", evidenceRecord(`"EntityType":"User","AccountSid":"` + sid1 + `","AccountName":null,"AccountDomain":null`), "", defender.UserRef{SID: sid1}},
		{"a user by name only", evidenceRecord(`"EntityType":"User","AccountName":"user1","AccountDomain":"contoso"`), "", defender.UserRef{Domain: "contoso", Name: "user1"}},
		{"with a severity", evidenceRecord(`"Severity":"High","EntityType":"User","AccountName":"user1","AccountDomain":"contoso"`), "High", defender.UserRef{Domain: "contoso", Name: "user1"}},
		{"EntityType in another case", evidenceRecord(`"EntityType":"USER","AccountSid":"` + sid1 + `"`), "", defender.UserRef{SID: sid1}},
		{"a process row", evidenceRecord(`"EntityType":"Process","AccountName":"user1","AccountDomain":"contoso","AccountSid":"` + sid1 + `"`), "", defender.UserRef{}},
		{"no EntityType", evidenceRecord(`"AccountName":"user1","AccountDomain":"contoso","AccountSid":"` + sid1 + `"`), "", defender.UserRef{}},
		{"a name without a domain", evidenceRecord(`"EntityType":"User","AccountName":"user1"`), "", defender.UserRef{}},
		{"a user known by its UPN only", evidenceRecord(`"EntityType":"User","AccountUpn":"user1@contoso.com"`), "", defender.UserRef{}},
		{"AccountSid a number", evidenceRecord(`"EntityType":"User","AccountSid":5,"AccountName":"user1","AccountDomain":"contoso"`), "", defender.UserRef{}},
		{"keys in another case", evidenceRecord(`"entityType":"User","accountSid":"` + sid1 + `"`), "", defender.UserRef{}},
		{"properties null", `{"properties":null}`, "", defender.UserRef{}},
		{"properties an array", `{"properties":[{"Severity":"High"}]}`, "", defender.UserRef{}},
		{"no properties", `{"Severity":"High","EntityType":"User","AccountSid":"` + sid1 + `"}`, "", defender.UserRef{}},
		{"an alert object read as a record", alertWith(`"relatedUser":{"userName":"user1","domainName":"contoso"}`), "", defender.UserRef{}},
		{"not JSON", `{"properties":{"Severity":"High"}`, "", defender.UserRef{}},
	}
	for _, tt := range tests {
		h := schemas.ReadHints([]byte(tt.record), true)
		if h.Severity != tt.severity || h.User != tt.user {
			t.Errorf("%s: ReadHints = %+v, want severity %q, user %+v", tt.name, h, tt.severity, tt.user)
		}
	}
}

// TestReadHintsOfParsedEvents reads the hints of events as the pipeline
// has them: subslices of a parsed message.
func TestReadHintsOfParsedEvents(t *testing.T) {
	t.Parallel()
	p := mustParser(t, schemas.ParserConfig{})
	evs := p.Parse(readFile(t, "testdata/streaming-envelope.json"), nil)
	if len(evs) != 3 {
		t.Fatalf("%d events", len(evs))
	}
	if h := schemas.ReadHints(evs[1].Alert, evs[1].Record >= 0); h.User.SID != sid1 {
		t.Errorf("the evidence record's hints: %+v", h)
	}
	alert := readFile(t, "testdata/alert.json")
	alert = bytes.Replace(alert, []byte(`"accountName": "name"`), []byte(`"accountName": "temp123"`), 1)
	evs = p.Parse(alert, evs[:0])
	h := schemas.ReadHints(evs[0].Alert, evs[0].Record >= 0)
	want := defender.UserRef{SID: "S-1-5-21-11111607-1111760036-109187956-75141", Domain: "DOMAIN", Name: "temp123"}
	if h.Severity != "Low" || h.User != want {
		t.Errorf("the alert's hints: %+v, want Low and %+v", h, want)
	}
}

// BenchmarkReadHints reads the hints of a typical alert object, about 2 KB
// once compacted, that names one user, and of an AlertEvidence record.
func BenchmarkReadHints(b *testing.B) {
	alert := readFile(b, "testdata/alert.json")
	alert = bytes.Replace(alert, []byte(`"accountName": "name"`), []byte(`"accountName": "temp123"`), 1)
	var compact bytes.Buffer
	if err := json.Compact(&compact, alert); err != nil {
		b.Fatal(err)
	}
	var env struct{ Records []json.RawMessage }
	if err := json.Unmarshal(readFile(b, "testdata/streaming-envelope.json"), &env); err != nil {
		b.Fatal(err)
	}
	for _, c := range []struct {
		name   string
		in     []byte
		record bool
	}{
		{fmt.Sprintf("alert-%dB", compact.Len()), compact.Bytes(), false},
		{fmt.Sprintf("evidence-record-%dB", len(env.Records[1])), env.Records[1], true},
	} {
		b.Run(c.name, func(b *testing.B) {
			if h := schemas.ReadHints(c.in, c.record); h.User.IsZero() {
				b.Fatalf("no user in %s", c.name)
			}
			b.SetBytes(int64(len(c.in)))
			b.ReportAllocs()
			for b.Loop() {
				schemas.ReadHints(c.in, c.record)
			}
		})
	}
}
