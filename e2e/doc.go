// Package e2e holds the connector's end-to-end tests: the whole program,
// in-process through app.New and as the built binary, against Kafka over
// TCP and the Entra ID and Defender simulator over HTTPS, all on 127.0.0.1.
//
// Every test runs twice through kafkatest.Each: on an in-process kfake
// cluster, always, and on the real broker named by
// ENRICHER_TEST_KAFKA_BROKERS when it is set (scripts/kafka.sh start).
//
// What the suite covers: the three input forms and the v1 output envelope,
// validated against schemas/output.v1.schema.json; not_found and skipped
// events; every kind of bad input going to the dead-letter topic while its
// partition keeps flowing, with no bad id ever reaching the API; a Defender
// outage (passthrough within ENRICHER_MAX_ENRICH_WAIT, the breaker opening
// and closing again); per-alert ordering without head-of-line blocking; two
// connectors sharing a group while one stops; the binary's run, version and
// demo subcommands, SIGTERM and kill -9; and the HTTP endpoints.
//
// The harness is written to be reused by failure drills. harness_test.go:
// newEnv (topics, a consumer group, a simulator and the configuration that
// wires them) and startConnector (in-process, returning the App and a stop
// func). binary_helpers_test.go: buildBinary (once per run) and
// startBinary, whose handle has Kill (SIGKILL) and Stop (SIGTERM, exit 0).
// streams_test.go: produceAlerts and produceStream write alerts that each
// carry a unique marker; a tail reads the output and dead-letter topics as
// they fill and readOutputs decodes them; verifyNoLoss checks that every
// input event came out at least once and counts duplicates; checkCommitted
// checks the group's offsets.
package e2e
