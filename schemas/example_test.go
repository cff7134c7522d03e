package schemas_test

import (
	"fmt"
	"time"

	"github.com/defender-enricher/defender-enricher/schemas"
)

func ExampleParser_Parse() {
	p, err := schemas.NewParser(schemas.ParserConfig{})
	if err != nil {
		panic(err)
	}
	value := []byte(`{"records":[
		{"category":"AdvancedHunting-AlertInfo","properties":{"AlertId":"da638458473376270421_-1259470431","ServiceSource":"Microsoft Defender for Endpoint"}},
		{"category":"AdvancedHunting-AlertInfo","properties":{"AlertId":"fa2f35fe4e-0aa7-4fcd-b5b1-4edc5c1ab8c1","ServiceSource":"Microsoft Defender for Office 365"}},
		{"category":"AdvancedHunting-AlertInfo","properties":{"AlertId":"../../machines"}}
	]}`)
	for _, e := range p.Parse(value, nil) {
		switch {
		case e.Reject != "":
			fmt.Printf("record %d: dead letter %s: %s\n", e.Record, e.Reject, e.Detail)
		case e.Skip:
			fmt.Printf("record %d: %s skipped\n", e.Record, e.AlertID)
		default:
			fmt.Printf("record %d: %s looked up\n", e.Record, e.AlertID)
		}
	}
	// Output:
	// record 0: da638458473376270421_-1259470431 looked up
	// record 1: fa2f35fe4e-0aa7-4fcd-b5b1-4edc5c1ab8c1 skipped
	// record 2: dead letter invalid_alert_id: record 2: alert id at "/properties/AlertId" is "../../machines", want 1 to 128 characters of A-Z a-z 0-9 _ -
}

func ExampleAppendOutput() {
	out := schemas.AppendOutput(nil, "636688558380765161_2136280442",
		[]byte(`{"id":"636688558380765161_2136280442","severity":"Medium"}`),
		nil,
		schemas.Enrichment{
			Status:     schemas.StatusNotFound,
			Source:     schemas.SourceCache,
			EnrichedAt: time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC),
			Error:      "no user for this alert (cached 404)",
		},
		schemas.Origin{Topic: "defender.alerts", Partition: 0, Offset: 42})
	fmt.Println(string(out))
	// Output:
	// {"schemaVersion":1,"alertId":"636688558380765161_2136280442","alert":{"id":"636688558380765161_2136280442","severity":"Medium"},"user":null,"enrichment":{"status":"not_found","source":"cache","enrichedAt":"2026-11-27T10:00:00.000Z","error":"no user for this alert (cached 404)"},"origin":{"topic":"defender.alerts","partition":0,"offset":42}}
}
