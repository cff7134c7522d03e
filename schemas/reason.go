package schemas

// Reason is why a message, or one record of an envelope, goes to the
// dead-letter topic. The set is closed, so it is also safe as a metric
// label.
type Reason string

// The dead-letter reasons. Parse reports at most one per event, checking
// in this order: size, JSON syntax and depth, object shape, alert id.
const (
	// ReasonInvalidJSON: not JSON, empty or only whitespace, data after
	// the top-level value, invalid UTF-8 in a string, or nested deeper
	// than MaxDepth.
	ReasonInvalidJSON Reason = "invalid_json"
	// ReasonNotObject: valid JSON but not an object (array, string,
	// number, boolean, null), for the message or for an envelope record.
	ReasonNotObject Reason = "not_object"
	// ReasonMissingAlertID: nothing at the id pointer (or on the way to
	// it), or the id is null.
	ReasonMissingAlertID Reason = "missing_alert_id"
	// ReasonInvalidAlertID: an id is there but is not a valid alert id:
	// not a string, or not 1 to 128 characters of A-Z a-z 0-9 _ - once
	// its JSON escapes are decoded.
	ReasonInvalidAlertID Reason = "invalid_alert_id"
	// ReasonTooLarge: the message is larger than MaxBytes. It is checked
	// before anything else, so an oversized message is never scanned.
	ReasonTooLarge Reason = "too_large"
	// ReasonEmptyEnvelope: a streaming-API envelope whose "records" array
	// is empty. It carries no event, and a message is never acknowledged
	// without an output or a dead letter.
	ReasonEmptyEnvelope Reason = "empty_envelope"
	// ReasonTooManyRecords: a streaming-API envelope with more records
	// than MaxRecords. The whole message is one dead letter.
	ReasonTooManyRecords Reason = "too_many_records"
	// ReasonNotDeferred: a record of the retry topic that is not a
	// deferral the connector wrote (see ParseDeferred). It is kept as it
	// came rather than guessed at.
	ReasonNotDeferred Reason = "not_deferred"
)

// Dead-letter header names. The enricher.* headers are the connector's
// own; the __connect.* ones are Kafka Connect's, so that tools which
// already replay Kafka Connect dead letters can read ours.
const (
	// HeaderReason carries the Reason.
	HeaderReason = "enricher.error.reason"
	// HeaderMessage carries Event.Detail.
	HeaderMessage = "enricher.error.message"
	// HeaderRecord carries the decimal index of the bad record within a
	// streaming-API envelope; it is set only for envelope records.
	HeaderRecord = "enricher.error.record"
	// HeaderTopic, HeaderPartition and HeaderOffset carry where the
	// message came from, partition and offset as decimal strings.
	HeaderTopic     = "__connect.errors.topic"
	HeaderPartition = "__connect.errors.partition"
	HeaderOffset    = "__connect.errors.offset"
)
