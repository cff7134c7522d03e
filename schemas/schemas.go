package schemas

import "embed"

// FS holds the JSON Schemas (draft 2020-12) of the contract, one file per
// name below, at the root of the file system. It is read-only.
//
//go:embed *.schema.json
var FS embed.FS

// File names of the schemas in FS. Each schema's $id is SchemaBaseURI
// followed by its file name; output.v1.schema.json refers to
// user.schema.json by that relative name, so a validator needs both.
const (
	// AlertSchema describes form 1, the alerts API object: an object
	// with a valid string "id"; other members are free.
	AlertSchema = "alert.schema.json"
	// StreamingEnvelopeSchema describes form 2, the Defender XDR
	// streaming-API envelope whose records all carry a valid
	// properties.AlertId.
	StreamingEnvelopeSchema = "streaming-envelope.schema.json"
	// OutputSchema describes the v1 output envelope AppendOutput writes.
	OutputSchema = "output.v1.schema.json"
	// UserSchema describes the user object of a v1 envelope: the
	// documented fields of the Defender for Endpoint user, all optional
	// and nullable, more allowed, OData annotations not.
	UserSchema = "user.schema.json"
	// ECSSchema describes the Elastic Common Schema documents AppendECS
	// writes (ENRICHER_OUTPUT_FORMAT=ecs).
	ECSSchema = "ecs.v1.schema.json"
	// OCSFSchema describes OCSF 1.8.0's Detection Finding class, built
	// from OCSF's schema files by schemas/ocsf/gen: what AppendOCSF
	// writes (ENRICHER_OUTPUT_FORMAT=ocsf) must validate against it.
	OCSFSchema = "ocsf-1.8.0-detection_finding.schema.json"

	// SchemaBaseURI is the base of every schema's $id.
	SchemaBaseURI = "https://github.com/defender-enricher/defender-enricher/schemas/"
)
