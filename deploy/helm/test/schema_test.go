package charttest

import (
	"bufio"
	"encoding/json"
	"os"
	"regexp"
	"strings"
	"testing"
)

// readmePath is the connector's README, whose Configuration table lists
// every option.
const readmePath = "../../../README.md"

// schemaOptions returns the ENRICHER_* options that values.schema.json
// knows, in its order.
func schemaOptions(t *testing.T) []string {
	t.Helper()
	data, err := os.ReadFile(chartDir + "/values.schema.json")
	if err != nil {
		t.Fatal(err)
	}
	var schema struct {
		Properties struct {
			Config struct {
				AdditionalProperties *bool       `json:"additionalProperties"`
				Properties           orderedKeys `json:"properties"`
			} `json:"config"`
		} `json:"properties"`
	}
	if err := json.Unmarshal(data, &schema); err != nil {
		t.Fatalf("values.schema.json: %v", err)
	}
	cfg := schema.Properties.Config
	if cfg.AdditionalProperties == nil || *cfg.AdditionalProperties {
		t.Fatalf("values.schema.json: config must refuse unknown options (additionalProperties false)")
	}
	return cfg.Properties
}

// orderedKeys is the keys of a JSON object, in the order they appear.
type orderedKeys []string

func (k *orderedKeys) UnmarshalJSON(b []byte) error {
	dec := json.NewDecoder(strings.NewReader(string(b)))
	if _, err := dec.Token(); err != nil { // {
		return err
	}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return err
		}
		*k = append(*k, tok.(string))
		var skip json.RawMessage
		if err := dec.Decode(&skip); err != nil {
			return err
		}
	}
	return nil
}

// readmeOptions returns the variables of the README's Configuration table:
// the rows that start with | `ENRICHER_.
func readmeOptions(t *testing.T) []string {
	t.Helper()
	f, err := os.Open(readmePath)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	row := regexp.MustCompile("^\\| `(ENRICHER_[A-Z0-9_]+)`")
	var names []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 1<<16), 1<<20)
	for sc.Scan() {
		if m := row.FindStringSubmatch(sc.Text()); m != nil {
			names = append(names, m[1])
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if len(names) < 10 {
		t.Fatalf("%s: found %d option rows; is the Configuration table still there?", readmePath, len(names))
	}
	return names
}

// TestSchemaKnowsEveryOption keeps the chart in step with the connector: an
// option added to the README's table must be added to values.schema.json
// (and to everyOption), and an option the schema lists must be documented.
func TestSchemaKnowsEveryOption(t *testing.T) {
	inSchema := map[string]bool{}
	for _, name := range schemaOptions(t) {
		if inSchema[name] {
			t.Errorf("values.schema.json lists %s twice", name)
		}
		inSchema[name] = true
	}
	inReadme := map[string]bool{}
	for _, name := range readmeOptions(t) {
		if inReadme[name] {
			t.Errorf("README lists %s twice", name)
		}
		inReadme[name] = true
	}
	for _, name := range sortedKeys(inReadme) {
		if !inSchema[name] {
			t.Errorf("%s is in the README's Configuration table but not in values.schema.json (properties.config)", name)
		}
	}
	for _, name := range sortedKeys(inSchema) {
		if !inReadme[name] {
			t.Errorf("%s is in values.schema.json but not in the README's Configuration table", name)
		}
	}
}

// TestSchemaRefusesBadValues renders value sets that must fail, each with
// an error that names the bad key.
func TestSchemaRefusesBadValues(t *testing.T) {
	base := []string{"image.repository=" + image, "config.ENRICHER_KAFKA_BROKERS=kafka:9092"}
	redis := []string{"secrets.existingSecret=defender-enricher", "secrets.env.ENRICHER_REDIS_URL=redis-url"}
	join := func(sets ...[]string) []string {
		var all []string
		for _, s := range sets {
			all = append(all, s...)
		}
		return all
	}
	for _, tc := range []struct {
		name string
		file string
		set  []string
		want string // in the error
	}{
		{name: "unknown top-level key", set: join(base, []string{"replicas=2"}), want: "'replicas'"},
		{name: "image tag a number", file: "image: {tag: 1.2}", set: base, want: "/image/tag"},
		{name: "image tag a list", file: "image: {tag: [v1]}", set: base, want: "/image/tag"},
		{name: "image without repository", set: []string{"config.ENRICHER_KAFKA_BROKERS=kafka:9092"}, want: "/image/repository"},
		{name: "replicas below one", set: join(base, []string{"replicaCount=0"}), want: "/replicaCount"},
		{name: "replicas not a number", set: join(base, []string{"replicaCount=three"}), want: "/replicaCount"},
		{name: "several replicas without Redis or divided limits", set: join(base, []string{"replicaCount=3"}), want: "ENRICHER_DEFENDER_RATE_LIMITS"},
		{name: "KEDA without Redis", set: join(base, []string{"keda.enabled=true", "keda.inputPartitions=6"}), want: "ENRICHER_REDIS_URL"},
		{name: "KEDA without the partition count", set: join(base, redis, []string{"keda.enabled=true"}), want: "/keda/inputPartitions"},
		{name: "KEDA minimum above the partitions", set: join(base, redis, []string{"keda.enabled=true", "keda.inputPartitions=2", "keda.minReplicaCount=3"}), want: "keda.minReplicaCount"},
		{name: "unknown option", set: join(base, []string{"config.ENRICHER_KAFKA_BROKER=kafka:9092"}), want: "ENRICHER_KAFKA_BROKER'"},
		{name: "option of another program", set: join(base, []string{"config.KAFKA_BROKERS=kafka:9092"}), want: "KAFKA_BROKERS"},
		{name: "no brokers", set: []string{"image.repository=" + image}, want: "ENRICHER_KAFKA_BROKERS"},
		{name: "brokers with credentials", set: []string{"image.repository=" + image, "config.ENRICHER_KAFKA_BROKERS=user:pw@kafka:9092"}, want: "ENRICHER_KAFKA_BROKERS"},
		{name: "broker without port", set: []string{"image.repository=" + image, "config.ENRICHER_KAFKA_BROKERS=kafka"}, want: "ENRICHER_KAFKA_BROKERS"},
		{name: "Redis URL as a plain value", set: join(base, []string{"config.ENRICHER_REDIS_URL=rediss://:key@cache:6380/0"}), want: "/config/ENRICHER_REDIS_URL"},
		{name: "SASL password as a plain value", set: join(base, []string{"config.ENRICHER_KAFKA_SASL_PASSWORD=hunter2"}), want: "/config/ENRICHER_KAFKA_SASL_PASSWORD"},
		{name: "client secret in extraEnv", file: "extraEnv: [{name: AZURE_CLIENT_SECRET, value: hunter2}]", set: base, want: "/extraEnv/0"},
		{name: "client secret under azure", set: join(base, []string{"azure.clientSecret=hunter2"}), want: "'clientSecret'"},
		{name: "a secret value where a key name goes", set: join(base, []string{"secrets.existingSecret=s", "secrets.env.ENRICHER_REDIS_URL=rediss://:key@cache:6380/0"}), want: "/secrets/env/ENRICHER_REDIS_URL"},
		{name: "secret variable the chart does not know", set: join(base, []string{"secrets.existingSecret=s", "secrets.env.ENRICHER_LOG_LEVEL=level"}), want: "ENRICHER_LOG_LEVEL"},
		{name: "secret key without a Secret", set: join(base, []string{"secrets.env.AZURE_CLIENT_SECRET=client-secret"}), want: "existingSecret"},
		{name: "secret files without a Secret", set: join(base, []string{"secrets.files.env.ENRICHER_KAFKA_TLS_CA_FILE=ca.crt"}), want: "secretName"},
		{name: "option in extraEnv", file: "extraEnv: [{name: ENRICHER_LOG_LEVEL, value: debug}]", set: base, want: "/extraEnv/0/name"},
		{name: "option set twice", set: join(base, []string{"config.ENRICHER_KAFKA_TLS=true", "config.ENRICHER_KAFKA_TLS_CA_FILE=/ca.pem", "secrets.files.secretName=tls", "secrets.files.env.ENRICHER_KAFKA_TLS_CA_FILE=ca.crt"}), want: "config.ENRICHER_KAFKA_TLS_CA_FILE"},
		{name: "Kafka TLS files without TLS", set: join(base, []string{"secrets.files.secretName=tls", "secrets.files.env.ENRICHER_KAFKA_TLS_CA_FILE=ca.crt"}), want: "missing property 'ENRICHER_KAFKA_TLS'"},
		{name: "client certificate without its key", set: join(base, []string{"config.ENRICHER_KAFKA_TLS=true", "secrets.files.secretName=tls", "secrets.files.env.ENRICHER_KAFKA_TLS_CERT_FILE=tls.crt"}), want: "ENRICHER_KAFKA_TLS_KEY_FILE"},
		{name: "state claim with two replicas", set: join(base, []string{"stateVolume.existingClaim=state", "replicaCount=2", "config.ENRICHER_DEFENDER_RATE_LIMITS=50/1m"}), want: "/replicaCount"},
		{name: "state claim with two pods in a rollout", set: join(base, []string{"stateVolume.existingClaim=state", "strategy.type=RollingUpdate", "strategy.rollingUpdate.maxSurge=1"}), want: "/strategy"},
		{name: "bad log level", set: join(base, []string{"config.ENRICHER_LOG_LEVEL=verbose"}), want: "/config/ENRICHER_LOG_LEVEL"},
		{name: "bad SASL mechanism", set: join(base, []string{"config.ENRICHER_KAFKA_SASL_MECHANISM=gssapi"}), want: "/config/ENRICHER_KAFKA_SASL_MECHANISM"},
		{name: "bad credential", set: join(base, []string{"config.ENRICHER_AZURE_CREDENTIAL=environment"}), want: "/config/ENRICHER_AZURE_CREDENTIAL"},
		{name: "bad compression", set: join(base, []string{"config.ENRICHER_KAFKA_COMPRESSION=brotli"}), want: "/config/ENRICHER_KAFKA_COMPRESSION"},
		{name: "bad start offset", set: join(base, []string{"config.ENRICHER_START_OFFSET=newest"}), want: "/config/ENRICHER_START_OFFSET"},
		{name: "bad policy", set: join(base, []string{"config.ENRICHER_ON_UNAVAILABLE=drop"}), want: "/config/ENRICHER_ON_UNAVAILABLE"},
		{name: "bad log format", set: join(base, []string{"config.ENRICHER_LOG_FORMAT=xml"}), want: "/config/ENRICHER_LOG_FORMAT"},
		{name: "bad output format", set: join(base, []string{"config.ENRICHER_OUTPUT_FORMAT=cef"}), want: "/config/ENRICHER_OUTPUT_FORMAT"},
		{name: "duration without a unit", set: join(base, []string{"config.ENRICHER_SHUTDOWN_TIMEOUT=20"}), want: "/config/ENRICHER_SHUTDOWN_TIMEOUT"},
		{name: "bool not a bool", set: join(base, []string{"config.ENRICHER_KAFKA_TLS=yes"}), want: "/config/ENRICHER_KAFKA_TLS"},
		{name: "count below its minimum", set: join(base, []string{"config.ENRICHER_MAX_IN_FLIGHT=0"}), want: "/config/ENRICHER_MAX_IN_FLIGHT"},
		{name: "reserve above 90%", set: join(base, []string{"config.ENRICHER_DEFENDER_RESERVE=95%"}), want: "/config/ENRICHER_DEFENDER_RESERVE"},
		{name: "Defender over plain HTTP", set: join(base, []string{"config.ENRICHER_DEFENDER_API_URL=http://api.securitycenter.microsoft.com"}), want: "/config/ENRICHER_DEFENDER_API_URL"},
		{name: "HTTP on loopback only", set: join(base, []string{"config.ENRICHER_HTTP_ADDR=127.0.0.1:8080"}), want: "/config/ENRICHER_HTTP_ADDR"},
		{name: "HTTP off", file: "config: {ENRICHER_HTTP_ADDR: ''}", set: base, want: "/config/ENRICHER_HTTP_ADDR"},
		{name: "bad topic", set: join(base, []string{"config.ENRICHER_INPUT_TOPIC=alerts/in"}), want: "/config/ENRICHER_INPUT_TOPIC"},
		{name: "workload identity without client id", set: join(base, []string{"azure.workloadIdentity.enabled=true"}), want: "/azure/workloadIdentity/clientId"},
		{name: "workload identity with a second client id", set: join(base, []string{"azure.workloadIdentity.enabled=true", "azure.workloadIdentity.clientId=" + clientID, "azure.clientId=" + clientID}), want: "/azure/clientId"},
		{name: "client id not a GUID", set: join(base, []string{"azure.clientId=my-app"}), want: "/azure/clientId"},
		{name: "workload-identity credential without workload identity", set: join(base, []string{"azure.tenantId=" + tenantID, "config.ENRICHER_AZURE_CREDENTIAL=workload-identity"}), want: "/azure/workloadIdentity/enabled"},
		{name: "client-secret credential without the secret", set: join(base, []string{"azure.tenantId=" + tenantID, "azure.clientId=" + clientID, "config.ENRICHER_AZURE_CREDENTIAL=client-secret"}), want: "AZURE_CLIENT_SECRET"},
		{name: "client-certificate credential without the certificate", set: join(base, []string{"azure.tenantId=" + tenantID, "azure.clientId=" + clientID, "config.ENRICHER_AZURE_CREDENTIAL=client-certificate"}), want: "/secrets/files"},
		{name: "SASL without the password", set: join(base, []string{"config.ENRICHER_KAFKA_SASL_MECHANISM=scram-sha-512", "config.ENRICHER_KAFKA_SASL_USERNAME=u"}), want: "ENRICHER_KAFKA_SASL_PASSWORD"},
		{name: "NetworkPolicy without the brokers' CIDRs", set: join(base, []string{"networkPolicy.enabled=true", "networkPolicy.egress.entraId.cidrs={20.190.128.0/18}", "networkPolicy.egress.defender.cidrs={52.100.0.0/16}"}), want: "/networkPolicy/egress/kafka/cidrs"},
		{name: "NetworkPolicy with Redis but not its CIDRs", set: join(base, redis, []string{"networkPolicy.enabled=true", "networkPolicy.egress.kafka.cidrs={10.0.0.0/8}", "networkPolicy.egress.entraId.cidrs={20.190.128.0/18}", "networkPolicy.egress.defender.cidrs={52.100.0.0/16}"}), want: "/networkPolicy/egress/redis/cidrs"},
		{name: "bad CIDR", set: join(base, []string{"networkPolicy.egress.kafka.cidrs={10.0.0.0}"}), want: "/networkPolicy/egress/kafka/cidrs/0"},
		{name: "unknown probe field", set: join(base, []string{"probes.liveness.path=/live"}), want: "'path'"},
		{name: "grace margin zero", set: join(base, []string{"shutdownGraceMarginSeconds=0"}), want: "/shutdownGraceMarginSeconds"},
		{name: "state mount path for secret files", set: join(base, []string{"secrets.files.mountPath=/var/lib/defender-enricher"}), want: "/secrets/files/mountPath"},
		{name: "bad GOMEMLIMIT", set: join(base, []string{"goMemLimit=200M"}), want: "/goMemLimit"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := render(t, values(t, tc.file, tc.set...))
			if err == nil {
				t.Fatalf("rendered; want an error naming %s", tc.want)
			}
			if testing.Verbose() {
				t.Log(err)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error does not name %s:\n%v", tc.want, err)
			}
		})
	}
}
