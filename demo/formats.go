package demo

import (
	"encoding/json"
	"fmt"

	"github.com/defender-enricher/defender-enricher/schemas"
)

// reader reads what the demo shows of an output record in one format: the
// envelope's fields it prints, and whether the record is an update.
type reader func(value []byte) (o output, update bool, err error)

// readerFor returns the reader of a format.
func readerFor(f schemas.Format) (reader, error) {
	switch f {
	case schemas.FormatEnvelope, "":
		return readEnvelope, nil
	case schemas.FormatECS:
		return readECS, nil
	case schemas.FormatOCSF:
		return readOCSF, nil
	}
	return nil, fmt.Errorf("the demo cannot read the output format %q", f)
}

func readEnvelope(value []byte) (output, bool, error) {
	var v output
	if err := json.Unmarshal(value, &v); err != nil {
		return v, false, err
	}
	return v, isUpdate(value), nil
}

// readECS reads an ECS document: the alert as it came is under
// microsoft.defender, the enrichment under defender_enricher.
func readECS(value []byte) (output, bool, error) {
	var d struct {
		Event struct {
			ID string `json:"id"`
		} `json:"event"`
		Enricher struct {
			Enrichment struct {
				Status string `json:"status"`
				Source string `json:"source"`
				Error  string `json:"error"`
			} `json:"enrichment"`
			Update json.RawMessage `json:"update"`
		} `json:"defender_enricher"`
		Microsoft struct {
			Defender struct {
				Alert  json.RawMessage `json:"alert"`
				Record json.RawMessage `json:"record"`
				User   *struct {
					ID string `json:"id"`
				} `json:"user"`
			} `json:"defender"`
		} `json:"microsoft"`
	}
	var o output
	if err := json.Unmarshal(value, &d); err != nil {
		return o, false, err
	}
	alert := d.Microsoft.Defender.Alert
	if len(alert) == 0 {
		alert = d.Microsoft.Defender.Record
	}
	if len(alert) > 0 {
		if err := json.Unmarshal(alert, &o.Alert); err != nil {
			return o, false, err
		}
	}
	o.AlertID, o.User = d.Event.ID, d.Microsoft.Defender.User
	o.Enrichment.Status, o.Enrichment.Source, o.Enrichment.Error = d.Enricher.Enrichment.Status, d.Enricher.Enrichment.Source, d.Enricher.Enrichment.Error
	return o, len(d.Enricher.Update) > 0 && string(d.Enricher.Update) != "null", nil
}

// readOCSF reads a Detection Finding: the alert as it came and the user
// under unmapped.defender, the enrichment in enrichments[0].data.
func readOCSF(value []byte) (output, bool, error) {
	var d struct {
		FindingInfo struct {
			UID string `json:"uid"`
		} `json:"finding_info"`
		Enrichments []struct {
			Data struct {
				Status string          `json:"status"`
				Source string          `json:"source"`
				Error  string          `json:"error"`
				Update json.RawMessage `json:"update"`
			} `json:"data"`
		} `json:"enrichments"`
		Unmapped struct {
			Defender struct {
				Alert  json.RawMessage `json:"alert"`
				Record json.RawMessage `json:"record"`
				User   *struct {
					ID string `json:"id"`
				} `json:"user"`
			} `json:"defender"`
		} `json:"unmapped"`
	}
	var o output
	if err := json.Unmarshal(value, &d); err != nil {
		return o, false, err
	}
	if len(d.Enrichments) != 1 {
		return o, false, fmt.Errorf("a finding with %d enrichments, want 1", len(d.Enrichments))
	}
	alert := d.Unmapped.Defender.Alert
	if len(alert) == 0 {
		alert = d.Unmapped.Defender.Record
	}
	if len(alert) > 0 {
		if err := json.Unmarshal(alert, &o.Alert); err != nil {
			return o, false, err
		}
	}
	en := d.Enrichments[0].Data
	o.AlertID, o.User = d.FindingInfo.UID, d.Unmapped.Defender.User
	o.Enrichment.Status, o.Enrichment.Source, o.Enrichment.Error = en.Status, en.Source, en.Error
	return o, len(en.Update) > 0 && string(en.Update) != "null", nil
}
