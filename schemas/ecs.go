package schemas

import (
	"encoding/json"
	"errors"
	"net/netip"
	"strconv"
	"strings"
	"time"
)

// ECSVersion is the value of "ecs.version" in every document AppendECS
// writes: the Elastic Common Schema release whose fields the documents
// use (see ecs/README.md for the field reference they are checked
// against).
const ECSVersion = "8.11.0"

// The constant members of every ECS document.
const (
	ecsModule  = "defender_enricher"
	ecsDataset = "defender_enricher.alert"
	// ecsProvider is event.provider for an alert object, and for a
	// streaming-API record without properties.ServiceSource (which the
	// connector treats as one of Defender for Endpoint).
	ecsProvider  = "Microsoft Defender for Endpoint"
	ecsFramework = "MITRE ATT&CK"
)

// AppendECS appends the record of one event as an Elastic Common Schema
// document (ECS 8.x, ecs.v1.schema.json) to dst and returns the extended
// slice. The document is one JSON object with nested objects:
//
//   - "@timestamp": the alert's own time (an alert object's
//     alertCreationTime, else its firstEventTime; a record's
//     properties.Timestamp, else its time), in UTC; the enrichment time
//     when the alert has none that is an RFC 3339 time;
//   - "ecs", "event" (kind alert, category intrusion_detection, plus
//     malware for a Malware or Ransomware alert, type info, severity, id
//     the alert id, created the enrichment time, start and end, dataset,
//     module, provider, url), "rule", "threat" (the MITRE ATT&CK tactics
//     of the alert's categories, its techniques and sub-techniques, its
//     threat family), "host" and "cloud" from the alert;
//   - "user" and "related" from the user, for StatusEnriched only;
//   - "defender_enricher": the enrichment, the origin and, for an update,
//     the status and time of the event it replaces;
//   - "microsoft": {"defender": {"alert" or "record": the alert as it
//     came, "user": the user as the API gave it}}.
//
// Alert is read once with encoding/json: a field the alert lacks, or
// holds with another type or an unusable value, is left out of the ECS
// fields, never guessed. Keys match as encoding/json matches them (an
// exact match first, else one that differs in case only; the last of a
// repeated key wins). Alert is written verbatim under "microsoft" when it
// is one JSON value, {} when it is empty, and as a JSON string of its
// bytes (invalid UTF-8 becoming U+FFFD) otherwise, so that the document
// is valid JSON whatever Alert holds. User is written verbatim when it is
// a JSON object ({} when empty) and left out otherwise, with the "user"
// and "related" it would give.
//
// The document matches ecs.v1.schema.json when Alert is a JSON object (as
// it is for every event the parser accepts), AlertID a valid alert id,
// and Status and Source are as documented on Enrichment. Strings are
// escaped as AppendOutput escapes them. AppendECS never fails and never
// panics, whatever Alert and User hold; unlike AppendOutput, it allocates
// for the fields it decodes.
func AppendECS(dst []byte, o *Output) []byte {
	var f ecsFields
	alertKind := f.read(o.Alert, o.Record)
	e := o.Enrichment
	var u ecsUser
	userObject := e.Status == StatusEnriched && u.read(o.User)

	dst = append(dst, `{"@timestamp":"`...)
	if f.timestamp.IsZero() {
		dst = e.EnrichedAt.UTC().AppendFormat(dst, enrichedAtLayout)
	} else {
		dst = f.timestamp.AppendFormat(dst, time.RFC3339Nano)
	}
	dst = append(dst, `","ecs":{"version":"`+ECSVersion+`"}`...)

	dst = append(dst, `,"event":{"kind":"alert","category":["intrusion_detection"`...)
	if f.malware() {
		dst = append(dst, `,"malware"`...)
	}
	dst = append(dst, `],"type":["info"]`...)
	if sev := ecsSeverity(f.severity); sev != 0 {
		dst = append(dst, `,"severity":`...)
		dst = strconv.AppendInt(dst, int64(sev), 10)
	}
	dst = append(dst, `,"id":`...)
	dst = appendString(dst, o.AlertID)
	dst = append(dst, `,"created":"`...)
	dst = e.EnrichedAt.UTC().AppendFormat(dst, enrichedAtLayout)
	dst = append(dst, '"')
	dst = appendECSTime(dst, ",\"start\":", f.start)
	dst = appendECSTime(dst, ",\"end\":", f.end)
	dst = append(dst, `,"dataset":"`+ecsDataset+`","module":"`+ecsModule+`","provider":`...)
	if f.provider == "" {
		f.provider = ecsProvider
	}
	dst = appendString(dst, f.provider)
	if f.url != "" {
		dst = append(dst, `,"url":`...)
		dst = appendString(dst, f.url)
	}
	dst = append(dst, '}')

	if f.title != "" || f.description != "" || len(f.categories) > 0 || f.detectorID != "" {
		dst = append(dst, `,"rule":{`...)
		first := true
		dst = appendECSString(dst, &first, "name", f.title)
		dst = appendECSString(dst, &first, "description", f.description)
		if len(f.categories) > 0 {
			dst = appendECSString(dst, &first, "category", f.categories[0])
		}
		dst = appendECSString(dst, &first, "id", f.detectorID)
		dst = append(dst, '}')
	}

	dst = f.appendThreat(dst)

	if f.hostID != "" || f.hostName != "" || f.hostIP != "" {
		dst = append(dst, `,"host":{`...)
		first := true
		dst = appendECSString(dst, &first, "id", f.hostID)
		if f.hostName != "" {
			// host.name is the lowercase FQDN, as ECS recommends;
			// host.hostname the name as Defender gave it.
			dst = appendECSKey(dst, &first, "name")
			start := len(dst)
			dst = appendString(dst, f.hostName)
			asciiLower(dst[start:])
			dst = appendECSString(dst, &first, "hostname", f.hostName)
		}
		if f.hostIP != "" {
			dst = appendECSKey(dst, &first, "ip")
			dst = append(dst, '[')
			dst = appendString(dst, f.hostIP)
			dst = append(dst, ']')
		}
		dst = append(dst, '}')
	}

	if userObject {
		dst = u.appendECS(dst)
	}

	if f.tenantID != "" {
		dst = append(dst, `,"cloud":{"account":{"id":`...)
		dst = appendString(dst, f.tenantID)
		dst = append(dst, "}}"...)
	}

	dst = append(dst, `,"defender_enricher":{"enrichment":{"status":`...)
	dst = appendString(dst, string(e.Status))
	if e.Source != SourceNone {
		dst = append(dst, `,"source":`...)
		dst = appendString(dst, string(e.Source))
	}
	dst = append(dst, `,"enriched_at":"`...)
	dst = e.EnrichedAt.UTC().AppendFormat(dst, enrichedAtLayout)
	dst = append(dst, '"')
	if e.Error != "" {
		dst = append(dst, `,"error":`...)
		dst = appendString(dst, e.Error)
	}
	dst = append(dst, `},"origin":{"topic":`...)
	dst = appendString(dst, o.Origin.Topic)
	dst = append(dst, `,"partition":`...)
	dst = strconv.AppendInt(dst, int64(o.Origin.Partition), 10)
	dst = append(dst, `,"offset":`...)
	dst = strconv.AppendInt(dst, o.Origin.Offset, 10)
	dst = append(dst, '}')
	if o.Update != nil {
		dst = append(dst, `,"update":{"previous_status":`...)
		dst = appendString(dst, string(o.Update.PreviousStatus))
		dst = append(dst, `,"previous_enriched_at":"`...)
		dst = o.Update.PreviousEnrichedAt.UTC().AppendFormat(dst, enrichedAtLayout)
		dst = append(dst, `"}`...)
	}

	if o.Record {
		dst = append(dst, `},"microsoft":{"defender":{"record":`...)
	} else {
		dst = append(dst, `},"microsoft":{"defender":{"alert":`...)
	}
	switch {
	case len(o.Alert) == 0:
		dst = append(dst, "{}"...)
	case alertKind == jsonInvalid:
		dst = appendString(dst, string(o.Alert))
	default:
		dst = append(dst, o.Alert...)
	}
	if userObject {
		dst = append(dst, `,"user":`...)
		dst = appendRaw(dst, o.User)
	}
	return append(dst, "}}}"...)
}

// What a JSON value read by AppendECS is.
const (
	jsonInvalid = iota // not one JSON value
	jsonOther          // a JSON value other than an object
	jsonObject
)

// decodeKind decodes v into dst (a pointer to a struct) and says what v
// is. A member whose type does not fit its field leaves the field as it
// was without making v invalid: encoding/json reports it as an
// UnmarshalTypeError after it has checked the whole value and decoded the
// other members.
func decodeKind(v []byte, dst any) int {
	err := json.Unmarshal(v, dst)
	var typeErr *json.UnmarshalTypeError
	if err != nil && !errors.As(err, &typeErr) {
		return jsonInvalid
	}
	for _, c := range v {
		if c != ' ' && c != '\t' && c != '\n' && c != '\r' {
			if c == '{' {
				return jsonObject
			}
			break
		}
	}
	return jsonOther
}

// ecsAlertObject is what AppendECS reads of an alert object (input forms
// 1 and 3), as the alerts API names its fields.
type ecsAlertObject struct {
	Title             string          `json:"title"`
	Description       string          `json:"description"`
	Category          string          `json:"category"`
	Severity          string          `json:"severity"`
	DetectorID        string          `json:"detectorId"`
	AlertCreationTime string          `json:"alertCreationTime"`
	FirstEventTime    string          `json:"firstEventTime"`
	LastEventTime     string          `json:"lastEventTime"`
	MachineID         string          `json:"machineId"`
	ComputerDNSName   string          `json:"computerDnsName"`
	AADTenantID       string          `json:"aadTenantId"`
	ThreatFamilyName  string          `json:"threatFamilyName"`
	AlertWebURL       string          `json:"alertWebUrl"`
	MitreTechniques   json.RawMessage `json:"mitreTechniques"`
	// Read for the OCSF format.
	Status          string          `json:"status"`
	DetectionSource string          `json:"detectionSource"`
	LastUpdateTime  string          `json:"lastUpdateTime"`
	IncidentID      json.RawMessage `json:"incidentId"`
}

// ecsRecord is what AppendECS reads of a streaming-API record (input
// form 2): an AlertInfo or AlertEvidence row.
type ecsRecord struct {
	Time       string `json:"time"`
	TenantID   string `json:"tenantId"`
	Properties struct {
		Timestamp     string `json:"Timestamp"`
		Title         string `json:"Title"`
		Category      string `json:"Category"`
		Severity      string `json:"Severity"`
		ServiceSource string `json:"ServiceSource"`
		DeviceID      string `json:"DeviceId"`
		DeviceName    string `json:"DeviceName"`
		LocalIP       string `json:"LocalIP"`
		ThreatFamily  string `json:"ThreatFamily"`
		// Read for the OCSF format.
		DetectionSource string `json:"DetectionSource"`
		// Categories and AttackTechniques are JSON strings that hold an
		// array of strings.
		Categories       json.RawMessage `json:"Categories"`
		AttackTechniques json.RawMessage `json:"AttackTechniques"`
	} `json:"properties"`
}

// ecsFields are the fields of an alert the ECS document maps, whichever
// its form; each is empty (zero) when the alert does not have it.
type ecsFields struct {
	timestamp, start, end                    time.Time
	title, description, severity, detectorID string
	provider, tenantID, url, software        string
	hostID, hostName, hostIP                 string
	categories, techniques                   []string
	// Read for the OCSF format: the alerts API's status, detection
	// source, last update and incident.
	status, detectionSource, incident string
	updated                           time.Time
}

// read fills f from an alert object (record false) or a streaming-API
// record and returns what alert is (jsonInvalid, jsonOther or jsonObject).
func (f *ecsFields) read(alert []byte, record bool) int {
	if record {
		var r ecsRecord
		kind := decodeKind(alert, &r)
		p := &r.Properties
		f.timestamp = firstTime(p.Timestamp, r.Time)
		f.title, f.severity, f.provider = p.Title, p.Severity, p.ServiceSource
		f.tenantID, f.hostID, f.hostName, f.software = r.TenantID, p.DeviceID, p.DeviceName, p.ThreatFamily
		f.detectionSource = p.DetectionSource
		if addr, err := netip.ParseAddr(p.LocalIP); err == nil && addr.Zone() == "" {
			f.hostIP = p.LocalIP
		}
		if p.Category != "" {
			f.categories = append(f.categories, p.Category)
		}
		f.categories = appendStringList(f.categories, p.Categories)
		f.techniques = appendStringList(nil, p.AttackTechniques)
		return kind
	}
	var a ecsAlertObject
	kind := decodeKind(alert, &a)
	f.timestamp = firstTime(a.AlertCreationTime, a.FirstEventTime)
	f.start, f.end = firstTime(a.FirstEventTime), firstTime(a.LastEventTime)
	f.title, f.description, f.severity, f.detectorID = a.Title, a.Description, a.Severity, a.DetectorID
	f.tenantID, f.hostID, f.hostName, f.software = a.AADTenantID, a.MachineID, a.ComputerDNSName, a.ThreatFamilyName
	f.url = a.AlertWebURL
	f.status, f.detectionSource, f.updated = a.Status, a.DetectionSource, firstTime(a.LastUpdateTime)
	if n := strings.TrimSpace(string(a.IncidentID)); n != "" && n != "null" {
		f.incident = strings.Trim(n, `"`)
	}
	if a.Category != "" {
		f.categories = append(f.categories, a.Category)
	}
	f.techniques = appendStringList(nil, a.MitreTechniques)
	return kind
}

// malware reports whether one of the alert's categories makes it a
// malware alert (ECS event.category "malware").
func (f *ecsFields) malware() bool {
	for _, c := range f.categories {
		if strings.EqualFold(c, "Malware") || strings.EqualFold(c, "Ransomware") {
			return true
		}
	}
	return false
}

// appendThreat appends the "threat" member, if the alert has anything
// for it: the ATT&CK tactics of its categories, its techniques and
// sub-techniques, and its threat family as threat.software.name.
func (f *ecsFields) appendThreat(dst []byte) []byte {
	var tactics []int // indexes in attackTactics
	for _, c := range f.categories {
		if i := tacticIndex(c); i >= 0 && !containsInt(tactics, i) {
			tactics = append(tactics, i)
		}
	}
	var techniques, subtechniques []string
	for _, s := range f.techniques {
		id, ok := techniqueID(s)
		if !ok {
			continue
		}
		if len(id) > len("T0000") {
			if !containsString(subtechniques, id) {
				subtechniques = append(subtechniques, id)
			}
			id = id[:len("T0000")]
		}
		if !containsString(techniques, id) {
			techniques = append(techniques, id)
		}
	}
	attack := len(tactics) > 0 || len(techniques) > 0
	if !attack && f.software == "" {
		return dst
	}
	dst = append(dst, `,"threat":{`...)
	first := true
	if attack {
		dst = appendECSKey(dst, &first, "framework")
		dst = append(dst, `"`+ecsFramework+`"`...)
	}
	if len(tactics) > 0 {
		dst = appendECSKey(dst, &first, "tactic")
		dst = append(dst, `{"id":[`...)
		for n, i := range tactics {
			if n > 0 {
				dst = append(dst, ',')
			}
			dst = appendString(dst, attackTactics[i].id)
		}
		dst = append(dst, `],"name":[`...)
		for n, i := range tactics {
			if n > 0 {
				dst = append(dst, ',')
			}
			dst = appendString(dst, attackTactics[i].name)
		}
		dst = append(dst, "]}"...)
	}
	if len(techniques) > 0 {
		dst = appendECSKey(dst, &first, "technique")
		dst = append(dst, `{"id":`...)
		dst = appendStringArray(dst, techniques)
		if len(subtechniques) > 0 {
			dst = append(dst, `,"subtechnique":{"id":`...)
			dst = appendStringArray(dst, subtechniques)
			dst = append(dst, '}')
		}
		dst = append(dst, '}')
	}
	if f.software != "" {
		dst = appendECSKey(dst, &first, "software")
		dst = append(dst, `{"name":`...)
		dst = appendString(dst, f.software)
		dst = append(dst, '}')
	}
	return append(dst, '}')
}

// ecsUser is what AppendECS reads of the user object.
type ecsUser struct {
	AccountName   string `json:"accountName"`
	AccountDomain string `json:"accountDomain"`
	AccountSid    string `json:"accountSid"`
}

// read fills u from the user and reports whether it is a JSON object (or
// empty, which is written as {}).
func (u *ecsUser) read(user []byte) bool {
	if len(user) == 0 {
		return true
	}
	return decodeKind(user, u) == jsonObject
}

// appendECS appends the "user" and "related" members, when the user has
// anything for them.
func (u *ecsUser) appendECS(dst []byte) []byte {
	if u.AccountName != "" || u.AccountDomain != "" || u.AccountSid != "" {
		dst = append(dst, `,"user":{`...)
		first := true
		dst = appendECSString(dst, &first, "name", u.AccountName)
		dst = appendECSString(dst, &first, "domain", u.AccountDomain)
		dst = appendECSString(dst, &first, "id", u.AccountSid)
		dst = append(dst, '}')
	}
	// related.user: the account name, the SID and domain\name, each
	// once.
	var related [3]string
	n := 0
	add := func(s string) {
		if s != "" && !containsString(related[:n], s) {
			related[n] = s
			n++
		}
	}
	add(u.AccountName)
	add(u.AccountSid)
	if u.AccountName != "" && u.AccountDomain != "" {
		add(u.AccountDomain + `\` + u.AccountName)
	}
	if n > 0 {
		dst = append(dst, `,"related":{"user":`...)
		dst = appendStringArray(dst, related[:n])
		dst = append(dst, '}')
	}
	return dst
}

// attackTactics are the MITRE ATT&CK Enterprise tactics, by the name
// Defender gives them as an alert category.
var attackTactics = []struct{ category, id, name string }{
	{"Reconnaissance", "TA0043", "Reconnaissance"},
	{"ResourceDevelopment", "TA0042", "Resource Development"},
	{"InitialAccess", "TA0001", "Initial Access"},
	{"Execution", "TA0002", "Execution"},
	{"Persistence", "TA0003", "Persistence"},
	{"PrivilegeEscalation", "TA0004", "Privilege Escalation"},
	{"DefenseEvasion", "TA0005", "Defense Evasion"},
	{"CredentialAccess", "TA0006", "Credential Access"},
	{"Discovery", "TA0007", "Discovery"},
	{"LateralMovement", "TA0008", "Lateral Movement"},
	{"Collection", "TA0009", "Collection"},
	{"CommandAndControl", "TA0011", "Command and Control"},
	{"Exfiltration", "TA0010", "Exfiltration"},
	{"Impact", "TA0040", "Impact"},
}

// tacticIndex returns the index in attackTactics of the tactic a Defender
// category names (in any ASCII case), or -1 for a category that is not a
// tactic (Malware, SuspiciousActivity, ...).
func tacticIndex(category string) int {
	for i, t := range attackTactics {
		if strings.EqualFold(category, t.category) {
			return i
		}
	}
	return -1
}

// techniqueID reads the ATT&CK technique or sub-technique id of an entry
// of mitreTechniques ("T1059.001") or AttackTechniques ("PowerShell
// (T1059.001)" or "T1059.001"): Tnnnn or Tnnnn.nnn.
func techniqueID(s string) (string, bool) {
	s = strings.TrimSpace(s)
	if strings.HasSuffix(s, ")") {
		if i := strings.LastIndexByte(s, '('); i >= 0 {
			s = strings.TrimSpace(s[i+1 : len(s)-1])
		}
	}
	if (len(s) != 5 && len(s) != 9) || s[0] != 'T' || !allDigits(s[1:5]) {
		return "", false
	}
	if len(s) == 9 && (s[5] != '.' || !allDigits(s[6:])) {
		return "", false
	}
	return s, true
}

func allDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// ecsSeverity maps a Defender severity (in any ASCII case) to
// event.severity as Elastic's own Microsoft Defender integrations do:
// Informational and Low 21, Medium 47, High 73, Critical 99 (the bands of
// Elastic Security's risk scores). Any other value, UnSpecified included,
// gives 0: no event.severity.
func ecsSeverity(s string) int {
	switch {
	case strings.EqualFold(s, "Informational"), strings.EqualFold(s, "Low"):
		return 21
	case strings.EqualFold(s, "Medium"):
		return 47
	case strings.EqualFold(s, "High"):
		return 73
	case strings.EqualFold(s, "Critical"):
		return 99
	}
	return 0
}

// appendStringList appends the strings of a JSON array of strings, or of
// a JSON string that holds one (as the streaming API writes its lists), or
// of a JSON string that holds a single value, leaving out empty strings
// and anything that is not a string.
func appendStringList(dst []string, raw json.RawMessage) []string {
	if len(raw) == 0 {
		return dst
	}
	if raw[0] == '"' {
		var s string
		if json.Unmarshal(raw, &s) != nil {
			return dst
		}
		s = strings.TrimSpace(s)
		if !strings.HasPrefix(s, "[") {
			if s != "" {
				dst = append(dst, s)
			}
			return dst
		}
		raw = json.RawMessage(s)
	}
	if raw[0] != '[' {
		return dst
	}
	var list []any
	if json.Unmarshal(raw, &list) != nil {
		return dst
	}
	for _, v := range list {
		if s, ok := v.(string); ok && s != "" {
			dst = append(dst, s)
		}
	}
	return dst
}

// firstTime returns the first of the values that is an RFC 3339 time, in
// UTC, or the zero time when none is. A time whose year in UTC is outside
// 0000 to 9999 is not one: it has no RFC 3339 form.
func firstTime(values ...string) time.Time {
	for _, s := range values {
		if s == "" {
			continue
		}
		t, err := time.Parse(time.RFC3339Nano, s)
		if err != nil {
			continue
		}
		if t = t.UTC(); t.Year() >= 0 && t.Year() <= 9999 {
			return t
		}
	}
	return time.Time{}
}

// appendECSTime appends key (with its comma and colon) and t in RFC 3339,
// unless t is zero.
func appendECSTime(dst []byte, key string, t time.Time) []byte {
	if t.IsZero() {
		return dst
	}
	dst = append(dst, key...)
	dst = append(dst, '"')
	dst = t.AppendFormat(dst, time.RFC3339Nano)
	return append(dst, '"')
}

// appendECSKey appends the key of the next member of an object: a comma
// first unless it is the object's first member. key needs no escaping.
func appendECSKey(dst []byte, first *bool, key string) []byte {
	if *first {
		*first = false
	} else {
		dst = append(dst, ',')
	}
	dst = append(dst, '"')
	dst = append(dst, key...)
	return append(dst, '"', ':')
}

// appendECSString appends the member key: v, unless v is empty.
func appendECSString(dst []byte, first *bool, key, v string) []byte {
	if v == "" {
		return dst
	}
	dst = appendECSKey(dst, first, key)
	return appendString(dst, v)
}

func appendStringArray(dst []byte, list []string) []byte {
	dst = append(dst, '[')
	for i, s := range list {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = appendString(dst, s)
	}
	return append(dst, ']')
}

func containsInt(list []int, n int) bool {
	for _, v := range list {
		if v == n {
			return true
		}
	}
	return false
}

func containsString(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// asciiLower lowers the ASCII capitals of b in place. Applied to a string
// appendString wrote, it leaves the escapes valid: they are written in
// lower case.
func asciiLower(b []byte) {
	for i, c := range b {
		if 'A' <= c && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
}
