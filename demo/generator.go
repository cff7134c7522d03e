package demo

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/defender-enricher/defender-enricher/schemas"
	"github.com/defender-enricher/defender-enricher/simulator"
)

// The alerts and users of a demo run. The pool is smaller than the alerts,
// so that users repeat: about three alerts for each user.
const (
	knownAlerts   = 60 // alerts the API has a user for
	unknownAlerts = 6  // alerts the API answers 404 for
	otherAlerts   = 8  // alerts of other Defender services
	poolSize      = 20 // users

	// Of the known alerts, exactly this many name no user, and this many
	// name their user and another of the pool; the rest name their user
	// alone, some of them in evidence only, with relatedUser null.
	namingNone     = knownAlerts / 10
	namingSeveral  = knownAlerts / 20
	evidenceOnly   = knownAlerts * 15 / 100
	endpointSource = "Microsoft Defender for Endpoint"
	tenantID       = "8c3f5d2e-6b1a-4f7e-9d0c-2a4b6e8f1c3d"
)

// severities is the mix of alert severities, in percent. The known alerts
// have it exactly; the others are drawn with these odds.
var severities = []struct {
	name    string
	percent int
}{{"High", 10}, {"Medium", 30}, {"Low", 45}, {"Informational", 15}}

// generator makes a stream that looks like what Defender sends: alerts API
// objects and streaming-API envelopes, alerts repeated as they are updated,
// some alerts the API has no user for, alerts of other Defender services,
// and now and then a message nobody could process.
//
// Alerts name their users as Defender does: an alert object in relatedUser
// and in evidence entries of entityType User, a streaming-API alert in
// AlertEvidence records of EntityType User. The user an alert names is the
// pool's user for its id, the one the simulator answers for it.
type generator struct {
	rng       *rand.Rand
	pool      *simulator.UserPool
	known     []string // alert ids the pool has a user for
	unknown   []string // alert ids the pool has no user for: the API answers 404
	other     []string // alert ids of other Defender services
	alerts    map[string]*alert
	sent      atomic.Int64
	malformed atomic.Int64
}

// alert is what stays the same from one update of an alert to the next.
type alert struct {
	kind       alertKind
	severity   string
	service    string
	incidentID int
	machineID  string
	computer   string
	// users are the users the alert names: none, its user, or its user and
	// another; related tells whether relatedUser names users[0].
	users   []simulator.PoolUser
	related bool
}

type alertKind struct {
	title, category, severity, technique string
	process, folder, commandLine         string
}

var kinds = []alertKind{
	{"Credential dumping activity observed", "CredentialAccess", "High", "T1003", "rundll32.exe", `C:\Windows\System32`, `rundll32.exe C:\Windows\System32\comsvcs.dll, MiniDump 624 C:\Users\Public\lsass.dmp full`},
	{"Mimikatz credential theft tool", "CredentialAccess", "High", "T1003.001", "mimikatz.exe", `C:\Users\Public\Downloads`, `mimikatz.exe "privilege::debug" "sekurlsa::logonpasswords" exit`},
	{"Ransomware behavior detected in the file system", "Ransomware", "High", "T1486", "svch0st.exe", `C:\ProgramData\Temp`, `svch0st.exe --encrypt C:\Users`},
	{"Suspicious PowerShell command line", "Execution", "Medium", "T1059.001", "powershell.exe", `C:\Windows\System32\WindowsPowerShell\v1.0`, `powershell.exe -NoProfile -WindowStyle Hidden -EncodedCommand SQBFAFgAIAAoAE4AZQB3AC0ATwBiAGoAZQBjAHQAKQA=`},
	{"Suspicious process injection observed", "DefenseEvasion", "Medium", "T1055", "notepad.exe", `C:\Windows\System32`, `notepad.exe`},
	{"Suspicious connection to a command and control server", "CommandAndControl", "Medium", "T1071", "msedge.exe", `C:\Program Files (x86)\Microsoft\Edge\Application`, `msedge.exe --no-startup-window`},
	{"Anomalous scheduled task created", "Persistence", "Low", "T1053.005", "schtasks.exe", `C:\Windows\System32`, `schtasks.exe /create /sc minute /mo 30 /tn Updater /tr C:\ProgramData\upd.exe`},
	{"Suspicious sequence of exploration activities", "Discovery", "Low", "T1087", "net.exe", `C:\Windows\System32`, `net.exe group "Domain Admins" /domain`},
	{"'Emotet' malware was prevented", "Malware", "Informational", "T1204", "winword.exe", `C:\Program Files\Microsoft Office\root\Office16`, `WINWORD.EXE /n C:\Users\Public\Documents\invoice.docm`},
	{"Potentially unwanted application detected", "UnwantedSoftware", "Informational", "T1204", "bundleinstaller.exe", `C:\Users\Public\Downloads`, `bundleinstaller.exe /silent`},
}

var otherSources = []string{
	"Microsoft Defender for Office 365",
	"Microsoft Entra ID Protection",
	"Microsoft Defender for Cloud Apps",
	"Microsoft Defender for Identity",
}

func newGenerator(seed uint64, pool *simulator.UserPool) *generator {
	g := &generator{rng: rand.New(rand.NewPCG(seed, seed>>1|1)), pool: pool, alerts: map[string]*alert{}}
	for i := 0; len(g.known) < knownAlerts || len(g.unknown) < unknownAlerts; i++ {
		id := g.alertID(i%3 == 0)
		if _, ok := pool.UserFor(id); ok {
			if len(g.known) < knownAlerts {
				g.known = append(g.known, id)
			}
		} else if len(g.unknown) < unknownAlerts {
			g.unknown = append(g.unknown, id)
		}
	}
	for range otherAlerts {
		g.other = append(g.other, fmt.Sprintf("fa%08x-%04x-%04x-%04x-%012x", g.rng.Uint32(), g.rng.IntN(1<<16), g.rng.IntN(1<<16), g.rng.IntN(1<<16), g.rng.Uint64()&(1<<48-1)))
	}

	// The known alerts get the severity mix and the naming shares exactly:
	// each is a position in two shuffles of them.
	naming, severity := g.rng.Perm(knownAlerts), g.rng.Perm(knownAlerts)
	for i, id := range g.known {
		a := g.newAlert(id, exactSeverity(severity[i], knownAlerts), endpointSource)
		user, _ := pool.UserFor(id)
		switch p := naming[i]; {
		case p < namingNone:
		case p < namingNone+namingSeveral && pool.Len() > 1:
			a.users, a.related = []simulator.PoolUser{user, g.anotherUser(user)}, true
		case p < namingNone+namingSeveral+evidenceOnly:
			a.users = []simulator.PoolUser{user}
		default:
			a.users, a.related = []simulator.PoolUser{user}, true
		}
	}
	for _, id := range g.unknown {
		g.newAlert(id, g.drawSeverity(), endpointSource)
	}
	for _, id := range g.other {
		a := g.newAlert(id, g.drawSeverity(), otherSources[g.rng.IntN(len(otherSources))])
		if user, ok := pool.UserFor(id); ok {
			a.users, a.related = []simulator.PoolUser{user}, true
		}
	}
	return g
}

func (g *generator) newAlert(id, severity, service string) *alert {
	var fitting []alertKind
	for _, k := range kinds {
		if k.severity == severity {
			fitting = append(fitting, k)
		}
	}
	a := &alert{
		kind:       fitting[g.rng.IntN(len(fitting))],
		severity:   severity,
		service:    service,
		incidentID: 100000 + g.rng.IntN(900000),
		machineID:  fmt.Sprintf("%016x%016x%08x", g.rng.Uint64(), g.rng.Uint64(), g.rng.Uint32()),
		computer:   fmt.Sprintf("ws-%04d.contoso.local", g.rng.IntN(10000)),
	}
	g.alerts[id] = a
	return a
}

// exactSeverity gives position p of n the severity whose share of the
// positions holds it, so that n alerts have the mix exactly (as far as n
// allows).
func exactSeverity(p, n int) string {
	cum := 0
	for _, s := range severities {
		cum += s.percent
		if p < n*cum/100 {
			return s.name
		}
	}
	return severities[len(severities)-1].name
}

func (g *generator) drawSeverity() string {
	return exactSeverity(g.rng.IntN(100), 100)
}

// anotherUser draws a user of the pool other than u; the pool has two at
// least.
func (g *generator) anotherUser(u simulator.PoolUser) simulator.PoolUser {
	for {
		if v := g.pool.At(g.rng.IntN(g.pool.Len())); v.AccountSid != u.AccountSid {
			return v
		}
	}
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

// alertObject is id's alert as the alerts API returns it with its evidence.
func (g *generator) alertObject(id string, now time.Time) []byte {
	a := g.alerts[id]
	created := now.Add(-time.Minute).Format(time.RFC3339Nano)
	evidence := []any{}
	for _, u := range a.users {
		e := newEvidence("User", created)
		e["accountName"] = u.AccountName
		e["domainName"] = strings.ToUpper(u.AccountDomain)
		e["userSid"] = u.AccountSid
		e["aadUserId"] = u.AADUserID
		e["userPrincipalName"] = u.UserPrincipalName
		evidence = append(evidence, e)
	}
	p := newEvidence("Process", created)
	p["fileName"] = a.kind.process
	p["filePath"] = a.kind.folder
	p["processCommandLine"] = a.kind.commandLine
	p["processId"] = 1000 + g.rng.IntN(20000)
	p["processCreationTime"] = now.Add(-2 * time.Minute).Format(time.RFC3339Nano)
	p["sha1"] = fmt.Sprintf("%016x%016x%08x", g.rng.Uint64(), g.rng.Uint64(), g.rng.Uint32())
	p["detectionStatus"] = "Detected"
	evidence = append(evidence, p)

	var related any
	if a.related && len(a.users) > 0 {
		related = map[string]any{"userName": a.users[0].AccountName, "domainName": strings.ToUpper(a.users[0].AccountDomain)}
	}
	alert := map[string]any{
		"id":                 id,
		"incidentId":         a.incidentID,
		"investigationId":    nil,
		"assignedTo":         nil,
		"severity":           a.severity,
		"status":             "New",
		"classification":     nil,
		"determination":      nil,
		"investigationState": "Queued",
		"detectionSource":    "WindowsDefenderAtp",
		"category":           a.kind.category,
		"title":              a.kind.title,
		"description":        "A process was observed doing something that looks like " + a.kind.category + ".",
		"alertCreationTime":  created,
		"firstEventTime":     now.Add(-2 * time.Minute).Format(time.RFC3339Nano),
		"lastEventTime":      created,
		"lastUpdateTime":     now.Format(time.RFC3339Nano),
		"machineId":          a.machineID,
		"computerDnsName":    a.computer,
		"rbacGroupName":      "Workstations",
		"aadTenantId":        tenantID,
		"relatedUser":        related,
		"mitreTechniques":    []string{a.kind.technique},
		"comments":           []any{},
		"evidence":           evidence,
	}
	b, _ := json.Marshal(alert)
	return b
}

// newEvidence is an alerts API evidence entry: every field there, null
// unless the entity has it.
func newEvidence(entityType, created string) map[string]any {
	e := map[string]any{"entityType": entityType, "evidenceCreationTime": created}
	for _, k := range []string{"sha1", "sha256", "fileName", "filePath", "processId", "processCommandLine", "processCreationTime",
		"parentProcessId", "parentProcessCreationTime", "parentProcessFileName", "parentProcessFilePath", "ipAddress", "url",
		"registryKey", "registryHive", "registryValueType", "registryValue", "accountName", "domainName", "userSid",
		"aadUserId", "userPrincipalName", "detectionStatus"} {
		e[k] = nil
	}
	return e
}

// envelope is a streaming-API message: for one alert or two distinct ones,
// the AlertInfo record, an AlertEvidence record for each user the alert
// names, and now and then one for its device.
func (g *generator) envelope(now time.Time) []byte {
	var records []any
	var first string
	for i := range 1 + g.rng.IntN(2) {
		id := g.pick()
		if g.rng.IntN(4) == 0 {
			id = g.other[g.rng.IntN(len(g.other))]
		}
		if i > 0 && id == first {
			break
		}
		first = id
		records = append(records, g.records(id, now)...)
	}
	b, _ := json.Marshal(map[string]any{"records": records})
	return b
}

func (g *generator) records(id string, now time.Time) []any {
	a := g.alerts[id]
	ts := now.Format(time.RFC3339Nano)
	record := func(category string, props map[string]any) any {
		props["Timestamp"], props["AlertId"], props["Title"] = ts, id, a.kind.title
		props["Severity"], props["ServiceSource"], props["DetectionSource"] = a.severity, a.service, "EDR"
		props["AttackTechniques"] = `["` + a.kind.technique + `"]`
		return map[string]any{"time": ts, "tenantId": tenantID, "operationName": "Publish", "category": category, "properties": props}
	}
	evidence := func(entityType, role string) map[string]any {
		return map[string]any{"Categories": `["` + a.kind.category + `"]`, "EntityType": entityType, "EvidenceRole": role}
	}
	records := []any{record("AdvancedHunting-AlertInfo", map[string]any{"Category": a.kind.category})}
	for i, u := range a.users {
		role := "Impacted"
		if i > 0 {
			role = "Related"
		}
		p := evidence("User", role)
		p["AccountName"], p["AccountDomain"], p["AccountSid"] = u.AccountName, u.AccountDomain, u.AccountSid
		p["AccountObjectId"], p["AccountUpn"] = u.AADUserID, u.UserPrincipalName
		records = append(records, record("AdvancedHunting-AlertEvidence", p))
	}
	if g.rng.IntN(2) == 0 {
		p := evidence("Machine", "Impacted")
		p["DeviceId"], p["DeviceName"] = a.machineID, a.computer
		records = append(records, record("AdvancedHunting-AlertEvidence", p))
	}
	return records
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
