package demo

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/defender-enricher/defender-enricher/schemas"
)

// generator makes a stream that looks like what Defender sends: alerts API
// objects and streaming-API envelopes, alerts repeated as they are updated,
// some alerts the API does not know, alerts of other Defender services, and
// now and then a message nobody could process.
type generator struct {
	rng       *rand.Rand
	known     []string // alert ids with a user
	unknown   []string // alert ids the API answers 404 for
	other     []string // alert ids of other Defender services
	sent      atomic.Int64
	malformed atomic.Int64
}

var titles = []struct{ title, category, severity, technique string }{
	{"Suspicious PowerShell command line", "Execution", "Medium", "T1059.001"},
	{"Credential dumping activity observed", "CredentialAccess", "High", "T1003"},
	{"Mimikatz credential theft tool", "CredentialAccess", "High", "T1003.001"},
	{"Suspicious process injection observed", "DefenseEvasion", "Medium", "T1055"},
	{"Ransomware behavior detected in the file system", "Ransomware", "High", "T1486"},
	{"Anomalous scheduled task created", "Persistence", "Low", "T1053.005"},
	{"Suspicious connection to a command and control server", "CommandAndControl", "Medium", "T1071"},
	{"An active 'Emotet' malware was detected", "Malware", "Informational", "T1204"},
}

var otherSources = []string{
	"Microsoft Defender for Office 365",
	"Microsoft Entra ID Protection",
	"Microsoft Defender for Cloud Apps",
	"Microsoft Defender for Identity",
}

func newGenerator(seed uint64) *generator {
	g := &generator{rng: rand.New(rand.NewPCG(seed, seed>>1|1))}
	for i := 0; i < 60; i++ {
		g.known = append(g.known, g.alertID(i%3 == 0))
	}
	for i := 0; i < 6; i++ {
		g.unknown = append(g.unknown, g.alertID(false))
	}
	for i := 0; i < 8; i++ {
		g.other = append(g.other, fmt.Sprintf("fa%08x-%04x-%04x-%04x-%012x", g.rng.Uint32(), g.rng.IntN(1<<16), g.rng.IntN(1<<16), g.rng.IntN(1<<16), g.rng.Uint64()&(1<<48-1)))
	}
	return g
}

// alertID makes an id in one of Defender's two formats:
// da637472900382838869_1364969609 or 636688558380765161_2136280442 (the
// part after the underscore is a signed 32-bit number).
func (g *generator) alertID(bare bool) string {
	ticks := 637000000000000000 + g.rng.Int64N(2000000000000000)
	n := int32(g.rng.Uint32())
	if bare {
		return fmt.Sprintf("%d_%d", ticks, n)
	}
	return fmt.Sprintf("da%d_%d", ticks, n)
}

// run produces messages at rate until they hold exactly events events, as
// parser (the connector's) splits them, or until ctx ends. A message that
// would go past the count is not sent; another is made in its place.
func (g *generator) run(ctx context.Context, cl *kgo.Client, rate, events int, parser *schemas.Parser) {
	tick := time.NewTicker(time.Second / time.Duration(rate))
	defer tick.Stop()
	var parsed []schemas.Event
	for left := events; left > 0; {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		var key, value []byte
		var malformed bool
		for {
			key, value, malformed = g.next()
			parsed = parser.Parse(value, parsed[:0])
			if len(parsed) <= left {
				break
			}
		}
		left -= len(parsed)
		rec := &kgo.Record{Key: key, Value: value, Headers: []kgo.RecordHeader{{Key: "source", Value: []byte("demo-generator")}}}
		cl.Produce(ctx, rec, nil)
		g.sent.Add(1)
		if malformed {
			g.malformed.Add(1)
		}
	}
}

// next returns one message: mostly alerts API objects, a quarter
// streaming-API envelopes, about one in forty malformed.
func (g *generator) next() (key, value []byte, malformed bool) {
	now := time.Now().UTC()
	switch r := g.rng.IntN(40); {
	case r == 0:
		return nil, g.malformedValue(), true
	case r < 10:
		return nil, g.envelope(now), false
	default:
		id := g.pick()
		return []byte(id), g.alertObject(id, now), false
	}
}

func (g *generator) pick() string {
	if g.rng.IntN(12) == 0 {
		return g.unknown[g.rng.IntN(len(g.unknown))]
	}
	// A few alerts are busy (updated often), most are quiet.
	return g.known[min(int(g.rng.ExpFloat64()*12), len(g.known)-1)]
}

func (g *generator) alertObject(id string, now time.Time) []byte {
	t := titles[g.rng.IntN(len(titles))]
	machine := fmt.Sprintf("%016x%016x%08x", g.rng.Uint64(), g.rng.Uint64(), g.rng.Uint32())
	alert := map[string]any{
		"id":                 id,
		"incidentId":         100000 + g.rng.IntN(900000),
		"investigationId":    nil,
		"assignedTo":         nil,
		"severity":           t.severity,
		"status":             "New",
		"classification":     nil,
		"determination":      nil,
		"investigationState": "Queued",
		"detectionSource":    "WindowsDefenderAtp",
		"category":           t.category,
		"title":              t.title,
		"description":        "A process was observed doing something that looks like " + t.category + ".",
		"alertCreationTime":  now.Add(-time.Minute).Format(time.RFC3339Nano),
		"firstEventTime":     now.Add(-2 * time.Minute).Format(time.RFC3339Nano),
		"lastEventTime":      now.Add(-time.Minute).Format(time.RFC3339Nano),
		"lastUpdateTime":     now.Format(time.RFC3339Nano),
		"machineId":          machine,
		"computerDnsName":    fmt.Sprintf("ws-%04d.contoso.local", g.rng.IntN(10000)),
		"rbacGroupName":      "Workstations",
		"aadTenantId":        "8c3f5d2e-6b1a-4f7e-9d0c-2a4b6e8f1c3d",
		"mitreTechniques":    []string{t.technique},
		"comments":           []any{},
		"evidence":           []any{},
	}
	b, _ := json.Marshal(alert)
	return b
}

func (g *generator) envelope(now time.Time) []byte {
	var records []any
	for i := 0; i < 1+g.rng.IntN(3); i++ {
		t := titles[g.rng.IntN(len(titles))]
		id, source := g.pick(), "Microsoft Defender for Endpoint"
		if g.rng.IntN(4) == 0 {
			id, source = g.other[g.rng.IntN(len(g.other))], otherSources[g.rng.IntN(len(otherSources))]
		}
		category := "AdvancedHunting-AlertInfo"
		props := map[string]any{
			"Timestamp": now.Format(time.RFC3339Nano), "AlertId": id, "Title": t.title,
			"Category": t.category, "Severity": t.severity, "ServiceSource": source,
			"DetectionSource": "EDR", "AttackTechniques": `["` + t.technique + `"]`,
		}
		if g.rng.IntN(3) == 0 {
			category = "AdvancedHunting-AlertEvidence"
			props["EntityType"] = "User"
			props["EvidenceRole"] = "Impacted"
			props["AccountName"] = "jdoe"
		}
		records = append(records, map[string]any{
			"time": now.Format(time.RFC3339Nano), "tenantId": "8c3f5d2e-6b1a-4f7e-9d0c-2a4b6e8f1c3d",
			"operationName": "Publish", "category": category, "properties": props,
		})
	}
	b, _ := json.Marshal(map[string]any{"records": records})
	return b
}

func (g *generator) malformedValue() []byte {
	bad := [][]byte{
		[]byte(`{"id": "da637472900382838869_1364969609", "title": `),
		[]byte(`["not", "an", "alert"]`),
		[]byte(`{"id": "../../machines", "title": "path traversal attempt"}`),
		[]byte(`{"title": "an alert without its id"}`),
		[]byte(`{"id": 1364969609}`),
		[]byte(`{"records": [{"properties": {"AlertId": "da637472900382838869_1364969609", "ServiceSource": "Microsoft Defender for Endpoint"}}, {"properties": {"AlertId": "a/b"}}]}`),
	}
	return bad[g.rng.IntN(len(bad))]
}
