package schemas_test

import (
	"strings"
	"testing"

	"github.com/defender-enricher/defender-enricher/schemas"
)

func BenchmarkParse(b *testing.B) {
	alert := readFile(b, "testdata/alert.json")
	env := readFile(b, "testdata/streaming-envelope.json")
	custom := []byte(`{"source":"siem","data":{"tenant":"contoso","alertId":"` + goodID + `","payload":` + string(alert) + `}}`)
	cases := []struct {
		name string
		cfg  schemas.ParserConfig
		in   []byte
	}{
		{"form1-alert", schemas.ParserConfig{}, alert},
		{"form2-envelope-3-records", schemas.ParserConfig{}, env},
		{"form3-pointer", schemas.ParserConfig{IDPointer: "/data/alertId"}, custom},
		{"reject-invalid-id", schemas.ParserConfig{}, []byte(`{"id":"../../machines","severity":"High"}`)},
		{"reject-10000-levels", schemas.ParserConfig{}, []byte(strings.Repeat("[", 10_000) + strings.Repeat("]", 10_000))},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			p := mustParser(b, c.cfg)
			dst := make([]schemas.Event, 0, 8)
			b.SetBytes(int64(len(c.in)))
			b.ReportAllocs()
			for b.Loop() {
				dst = p.Parse(c.in, dst[:0])
			}
		})
	}
}

func BenchmarkAppendOutput(b *testing.B) {
	alert := readFile(b, "testdata/alert.json")
	user := userWithoutOData(b)
	e := schemas.Enrichment{Status: schemas.StatusEnriched, Source: schemas.SourceAPI, EnrichedAt: testTime}
	dst := make([]byte, 0, 16<<10)
	b.SetBytes(int64(len(alert) + len(user)))
	b.ReportAllocs()
	for b.Loop() {
		dst = schemas.AppendOutput(dst[:0], goodID, alert, user, e, testOrigin)
	}
}
