package schemas

import "fmt"

// Format is the shape of the records on the output topic
// (ENRICHER_OUTPUT_FORMAT). Whatever the format, the records are keyed by
// the alert id, carry the input's headers, keep per-alert order and the
// delivery guarantee; dead letters and the retry topic's records are the
// same in every format (the retry topic always holds the v1 envelope,
// which the connector reads back).
type Format string

// The output formats.
const (
	// FormatEnvelope is the v1 envelope (output.v1.schema.json).
	FormatEnvelope Format = "envelope"
	// FormatECS is one Elastic Common Schema (ECS 8.x) document per event
	// (ecs.v1.schema.json), written by AppendECS.
	FormatECS Format = "ecs"
	// FormatOCSF is one OCSF 1.8.0 Detection Finding per event
	// (ocsf-1.8.0-detection_finding.schema.json), written by AppendOCSF.
	FormatOCSF Format = "ocsf"
)

// Formats lists the formats, the default first.
var Formats = []Format{FormatEnvelope, FormatOCSF, FormatECS}

// Output is one event as every format writes it.
type Output struct {
	AlertID string
	// Alert is the alert object or the streaming-API record, as it came
	// (one JSON value).
	Alert []byte
	// Record reports whether Alert is a streaming-API record (input form
	// 2) rather than an alert object (forms 1 and 3).
	Record bool
	// User is the user object, without OData annotations, when
	// Enrichment.Status is StatusEnriched; ignored otherwise.
	User       []byte
	Enrichment Enrichment
	Origin     Origin
	// Update is set on an update: the event published again once
	// enriched, replacing one published unavailable.
	Update *Update
}

// Encoder appends the record of one event in its format to dst and
// returns the extended slice.
type Encoder func(dst []byte, o *Output) []byte

// Encoder returns the format's encoder, or an error naming the formats.
func (f Format) Encoder() (Encoder, error) {
	switch f {
	case FormatEnvelope, "":
		return appendEnvelope, nil
	case FormatECS:
		return AppendECS, nil
	case FormatOCSF:
		return AppendOCSF, nil
	}
	return nil, fmt.Errorf("unknown output format %q: want one of %v", f, Formats)
}

// appendEnvelope is the v1 envelope: AppendOutput, or AppendUpdate for an
// update.
func appendEnvelope(dst []byte, o *Output) []byte {
	if o.Update != nil {
		return AppendUpdate(dst, o.AlertID, o.Alert, o.User, o.Enrichment, o.Origin, *o.Update)
	}
	return AppendOutput(dst, o.AlertID, o.Alert, o.User, o.Enrichment, o.Origin)
}
