package schemas

import (
	"encoding/json"
	"strconv"
	"strings"
	"time"
)

// OCSFVersion is the OCSF release of the records AppendOCSF writes.
const OCSFVersion = "1.8.0"

// The Detection Finding class of OCSF 1.8.0 and the names that go with it.
const (
	ocsfClassUID    = 2004
	ocsfCategoryUID = 2
	ocsfProduct     = "Microsoft Defender for Endpoint"
	ocsfVendor      = "Microsoft"
	// ocsfEnricher names the connector where OCSF records who processed
	// the event (metadata.loggers) and who enriched it (enrichments).
	ocsfEnricher = "defender-enricher"
)

// AppendOCSF appends one OCSF 1.8.0 Detection Finding (class_uid 2004,
// category 2) to dst and returns the extended slice:
//
//   - activity_id 1 Create for a new alert, 2 Update for an update (an
//     event published again once enriched), and type_uid 200401 or 200402;
//   - severity_id from the Defender severity: Informational 1, Low 2,
//     Medium 3, High 4, Critical 5, anything else 0 Unknown; status_id
//     from the alerts API's status: New 1, InProgress 2, Resolved 4
//     (left out when the alert has none, as streaming records do);
//   - finding_info: uid the alert id, title, desc, created, first and last
//     seen and modified times, the analytic named by the detection
//     source, the MITRE ATT&CK techniques, sub-techniques and the tactic
//     of the alert's category in attacks, the category in types;
//   - metadata: product Microsoft Defender for Endpoint by Microsoft (or
//     the record's ServiceSource), version 1.8.0, log_name the input
//     topic, original_time the alert's own time as it came, processed_time,
//     tenant_uid, correlation_uid the incident, and the connector as a
//     logger (metadata.loggers);
//   - device from the machine fields;
//   - evidences[0].user with the enriched user (name, domain, uid the SID,
//     type_id 2 Admin for a domain admin and 1 User
//     otherwise, account type_id 2 Windows Account), only when enriched;
//   - enrichments[0], OCSF's enrichment object: name "user", value the
//     status, provider the connector, data the enrichment (status, source,
//     enriched_at, error, the API's whole user, and the update);
//   - unmapped: the alert object or streaming-API record verbatim
//     (unmapped.defender.alert or .record), the user as the API gave it
//     (unmapped.defender.user) and the input's origin, so nothing of the
//     input is lost.
//
// Times are OCSF timestamps: milliseconds since the epoch. The record
// validates against ocsf-1.8.0-detection_finding.schema.json when Alert
// is a JSON object and AlertID a valid alert id. AppendOCSF never fails
// and never panics, whatever Alert and User hold; like AppendECS it
// decodes the alert's fields and allocates for them.
func AppendOCSF(dst []byte, o *Output) []byte {
	var f ecsFields
	alertKind := f.read(o.Alert, o.Record)
	e := o.Enrichment
	var u ocsfUser
	userObject := e.Status == StatusEnriched && u.read(o.User)
	processed := e.EnrichedAt.UnixMilli()
	at := processed
	if !f.timestamp.IsZero() {
		at = f.timestamp.UnixMilli()
	}

	activity, activityName := 1, "Create"
	if o.Update != nil {
		activity, activityName = 2, "Update"
	}
	dst = append(dst, `{"class_uid":2004,"class_name":"Detection Finding","category_uid":2,"category_name":"Findings","activity_id":`...)
	dst = strconv.AppendInt(dst, int64(activity), 10)
	dst = append(dst, `,"activity_name":"`...)
	dst = append(dst, activityName...)
	dst = append(dst, `","type_uid":`...)
	dst = strconv.AppendInt(dst, ocsfClassUID*100+int64(activity), 10)
	dst = append(dst, `,"type_name":"Detection Finding: `...)
	dst = append(dst, activityName...)
	sevID, sev := ocsfSeverity(f.severity)
	dst = append(dst, `","severity_id":`...)
	dst = strconv.AppendInt(dst, int64(sevID), 10)
	dst = append(dst, `,"severity":"`...)
	dst = append(dst, sev...)
	dst = append(dst, '"')
	if id, name := ocsfStatus(f.status); id != 0 {
		dst = append(dst, `,"status_id":`...)
		dst = strconv.AppendInt(dst, int64(id), 10)
		dst = append(dst, `,"status":"`...)
		dst = append(dst, name...)
		dst = append(dst, '"')
	}
	dst = append(dst, `,"time":`...)
	dst = strconv.AppendInt(dst, at, 10)
	if f.title != "" {
		dst = append(dst, `,"message":`...)
		dst = appendString(dst, f.title)
	}
	dst = append(dst, `,"is_alert":true`...)

	dst = appendOCSFFindingInfo(dst, o.AlertID, &f)
	dst = appendOCSFMetadata(dst, o, &f, processed)

	if f.hostID != "" || f.hostName != "" || f.hostIP != "" {
		dst = append(dst, `,"device":{"type_id":0,"type":"Unknown"`...)
		first := false
		dst = appendECSString(dst, &first, "uid", f.hostID)
		dst = appendECSString(dst, &first, "hostname", f.hostName)
		dst = appendECSString(dst, &first, "name", f.hostName)
		dst = appendECSString(dst, &first, "ip", f.hostIP)
		dst = append(dst, '}')
	}

	if userObject && u.any() {
		dst = append(dst, `,"evidences":[{"user":`...)
		dst = u.appendOCSF(dst)
		dst = append(dst, `}]`...)
	}

	// The enrichment itself, in OCSF's own enrichment object.
	dst = append(dst, `,"enrichments":[{"name":"user","value":`...)
	dst = appendString(dst, string(e.Status))
	dst = append(dst, `,"type":"user","provider":"`+ocsfEnricher+`","created_time":`...)
	dst = strconv.AppendInt(dst, processed, 10)
	if e.Error != "" {
		dst = append(dst, `,"desc":`...)
		dst = appendString(dst, e.Error)
	}
	dst = append(dst, `,"data":{"status":`...)
	dst = appendString(dst, string(e.Status))
	dst = append(dst, `,"source":`...)
	dst = appendString(dst, string(e.Source))
	dst = append(dst, `,"enriched_at":"`...)
	dst = e.EnrichedAt.UTC().AppendFormat(dst, enrichedAtLayout)
	dst = append(dst, `","error":`...)
	dst = appendString(dst, e.Error)
	if userObject {
		dst = append(dst, `,"user":`...)
		dst = appendRaw(dst, o.User)
	}
	if o.Update != nil {
		dst = append(dst, `,"update":{"previous_status":`...)
		dst = appendString(dst, string(o.Update.PreviousStatus))
		dst = append(dst, `,"previous_enriched_at":"`...)
		dst = o.Update.PreviousEnrichedAt.UTC().AppendFormat(dst, enrichedAtLayout)
		dst = append(dst, `"}`...)
	}
	dst = append(dst, `}}]`...)

	// Everything of the input, as it came.
	if o.Record {
		dst = append(dst, `,"unmapped":{"defender":{"record":`...)
	} else {
		dst = append(dst, `,"unmapped":{"defender":{"alert":`...)
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
	dst = append(dst, `},"origin":{"topic":`...)
	dst = appendString(dst, o.Origin.Topic)
	dst = append(dst, `,"partition":`...)
	dst = strconv.AppendInt(dst, int64(o.Origin.Partition), 10)
	dst = append(dst, `,"offset":`...)
	dst = strconv.AppendInt(dst, o.Origin.Offset, 10)
	return append(dst, "}}}"...)
}

func appendOCSFFindingInfo(dst []byte, alertID string, f *ecsFields) []byte {
	dst = append(dst, `,"finding_info":{"uid":`...)
	dst = appendString(dst, alertID)
	first := false
	dst = appendECSString(dst, &first, "title", f.title)
	dst = appendECSString(dst, &first, "desc", f.description)
	dst = appendOCSFTime(dst, "created_time", f.timestamp)
	dst = appendOCSFTime(dst, "first_seen_time", f.start)
	dst = appendOCSFTime(dst, "last_seen_time", f.end)
	dst = appendOCSFTime(dst, "modified_time", f.updated)
	dst = appendECSString(dst, &first, "src_url", f.url)
	if f.detectionSource != "" {
		dst = append(dst, `,"analytic":{"name":`...)
		dst = appendString(dst, f.detectionSource)
		dst = append(dst, `,"type_id":0,"type":"Unknown"`...)
		if f.detectorID != "" {
			dst = append(dst, `,"uid":`...)
			dst = appendString(dst, f.detectorID)
		}
		dst = append(dst, '}')
	}
	if len(f.categories) > 0 {
		dst = append(dst, `,"types":`...)
		dst = appendStringArray(dst, f.categories)
	}
	if f.provider != "" {
		dst = append(dst, `,"data_sources":[`...)
		dst = appendString(dst, f.provider)
		dst = append(dst, ']')
	}
	dst = appendOCSFAttacks(dst, f)
	return append(dst, '}')
}

// appendOCSFAttacks appends finding_info.attacks: one attack object per
// technique, with its sub-technique, and the tactic of the alert's
// category when it names one; a tactic alone when the alert has no
// technique.
func appendOCSFAttacks(dst []byte, f *ecsFields) []byte {
	tactic := -1
	for _, c := range f.categories {
		if i := tacticIndex(c); i >= 0 {
			tactic = i
			break
		}
	}
	var ids []string
	for _, s := range f.techniques {
		if id, ok := techniqueID(s); ok && !containsString(ids, id) {
			ids = append(ids, id)
		}
	}
	if len(ids) == 0 && tactic < 0 {
		return dst
	}
	appendTactic := func(dst []byte) []byte {
		if tactic < 0 {
			return dst
		}
		dst = append(dst, `,"tactic":{"uid":"`...)
		dst = append(dst, attackTactics[tactic].id...)
		dst = append(dst, `","name":"`...)
		dst = append(dst, attackTactics[tactic].name...)
		return append(dst, `"}`...)
	}
	dst = append(dst, `,"attacks":[`...)
	if len(ids) == 0 {
		dst = append(dst, `{"version":"`+attackVersion+`"`...)
		dst = appendTactic(dst)
		dst = append(dst, '}')
	}
	for i, id := range ids {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = append(dst, `{"version":"`+attackVersion+`","technique":{"uid":"`...)
		dst = append(dst, id[:5]...)
		dst = append(dst, `"}`...)
		if len(id) > 5 {
			dst = append(dst, `,"sub_technique":{"uid":"`...)
			dst = append(dst, id...)
			dst = append(dst, `"}`...)
		}
		dst = appendTactic(dst)
		dst = append(dst, '}')
	}
	return append(dst, ']')
}

// attackVersion is the MITRE ATT&CK version the tactic ids are of.
const attackVersion = "v15"

func appendOCSFMetadata(dst []byte, o *Output, f *ecsFields, processed int64) []byte {
	product := f.provider
	if product == "" {
		product = ocsfProduct
	}
	dst = append(dst, `,"metadata":{"version":"`+OCSFVersion+`","product":{"name":`...)
	dst = appendString(dst, product)
	dst = append(dst, `,"vendor_name":"`+ocsfVendor+`"},"log_name":`...)
	dst = appendString(dst, o.Origin.Topic)
	first := false
	if !f.timestamp.IsZero() {
		dst = appendECSKey(dst, &first, "original_time")
		dst = appendString(dst, f.timestamp.Format(time.RFC3339Nano))
	}
	dst = append(dst, `,"processed_time":`...)
	dst = strconv.AppendInt(dst, processed, 10)
	dst = appendECSString(dst, &first, "tenant_uid", f.tenantID)
	dst = appendECSString(dst, &first, "correlation_uid", f.incident)
	dst = append(dst, `,"loggers":[{"name":"`+ocsfEnricher+`","product":{"name":"`+ocsfEnricher+`","vendor_name":"`+ocsfEnricher+`"},"log_name":`...)
	dst = appendString(dst, o.Origin.Topic)
	dst = append(dst, `,"logged_time":`...)
	dst = strconv.AppendInt(dst, processed, 10)
	return append(dst, `}]}`...)
}

// appendOCSFTime appends the member key: t in milliseconds, unless t is
// zero. It always follows another member.
func appendOCSFTime(dst []byte, key string, t time.Time) []byte {
	if t.IsZero() {
		return dst
	}
	dst = append(dst, ',', '"')
	dst = append(dst, key...)
	dst = append(dst, '"', ':')
	return strconv.AppendInt(dst, t.UnixMilli(), 10)
}

// ocsfSeverity maps a Defender severity (in any ASCII case) to OCSF's
// severity_id and its caption.
func ocsfSeverity(s string) (int, string) {
	switch {
	case strings.EqualFold(s, "Informational"):
		return 1, "Informational"
	case strings.EqualFold(s, "Low"):
		return 2, "Low"
	case strings.EqualFold(s, "Medium"):
		return 3, "Medium"
	case strings.EqualFold(s, "High"):
		return 4, "High"
	case strings.EqualFold(s, "Critical"):
		return 5, "Critical"
	}
	return 0, "Unknown"
}

// ocsfStatus maps the alerts API's status to a Detection Finding's
// status_id and its caption; 0 for none or one OCSF has no place for.
func ocsfStatus(s string) (int, string) {
	switch {
	case strings.EqualFold(s, "New"):
		return 1, "New"
	case strings.EqualFold(s, "InProgress"):
		return 2, "In Progress"
	case strings.EqualFold(s, "Resolved"):
		return 4, "Resolved"
	}
	return 0, ""
}

// ocsfUser is what AppendOCSF reads of the user object.
type ocsfUser struct {
	ID            string `json:"id"`
	AccountName   string `json:"accountName"`
	AccountDomain string `json:"accountDomain"`
	AccountSid    string `json:"accountSid"`
	IsDomainAdmin *bool  `json:"isDomainAdmin"`
}

func (u *ocsfUser) read(user []byte) bool {
	if len(user) == 0 {
		return true
	}
	var v struct {
		ID            json.RawMessage `json:"id"`
		AccountName   json.RawMessage `json:"accountName"`
		AccountDomain json.RawMessage `json:"accountDomain"`
		AccountSid    json.RawMessage `json:"accountSid"`
		IsDomainAdmin json.RawMessage `json:"isDomainAdmin"`
	}
	if decodeKind(user, &v) != jsonObject {
		return false
	}
	str := func(raw json.RawMessage) string {
		var s string
		if json.Unmarshal(raw, &s) != nil {
			return ""
		}
		return s
	}
	u.ID, u.AccountName, u.AccountDomain, u.AccountSid = str(v.ID), str(v.AccountName), str(v.AccountDomain), str(v.AccountSid)
	var admin bool
	if json.Unmarshal(v.IsDomainAdmin, &admin) == nil {
		u.IsDomainAdmin = &admin
	}
	return true
}

func (u *ocsfUser) any() bool {
	return u.ID != "" || u.AccountName != "" || u.AccountDomain != "" || u.AccountSid != ""
}

// appendOCSF appends the OCSF user object.
func (u *ocsfUser) appendOCSF(dst []byte) []byte {
	typeID, typeName := 1, "User"
	if u.IsDomainAdmin != nil && *u.IsDomainAdmin {
		typeID, typeName = 2, "Admin"
	}
	dst = append(dst, `{"type_id":`...)
	dst = strconv.AppendInt(dst, int64(typeID), 10)
	dst = append(dst, `,"type":"`...)
	dst = append(dst, typeName...)
	dst = append(dst, '"')
	first := false
	dst = appendECSString(dst, &first, "name", u.AccountName)
	dst = appendECSString(dst, &first, "domain", u.AccountDomain)
	dst = appendECSString(dst, &first, "uid", u.AccountSid)
	dst = append(dst, `,"account":{"type_id":2,"type":"Windows Account"`...)
	dst = appendECSString(dst, &first, "name", u.AccountName)
	dst = appendECSString(dst, &first, "uid", u.AccountSid)
	return append(dst, `}}`...)
}
