package charttest

import (
	"fmt"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"helm.sh/helm/v4/pkg/chart/v2/lint"
	"helm.sh/helm/v4/pkg/chart/v2/lint/support"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	psaapi "k8s.io/pod-security-admission/api"
	"k8s.io/pod-security-admission/policy"
)

// Ids of the examples: GUIDs of no real tenant or application.
const (
	tenantID = "11111111-2222-3333-4444-555555555555"
	clientID = "66666666-7777-8888-9999-000000000000"
	image    = "registry.example.com/defender-enricher"
	brokers  = "kafka-0.kafka:9092,kafka-1.kafka:9092"
)

// secretVariables are the variables that hold a secret: they may only come
// from a Secret, by reference.
var secretVariables = []string{
	"AZURE_CLIENT_SECRET", "AZURE_CLIENT_CERTIFICATE_PASSWORD",
	"ENRICHER_KAFKA_SASL_PASSWORD", "ENRICHER_REDIS_URL",
}

// A value set of the chart and what its rendering must hold beyond what
// checkRelease asks of every one.
type valueSet struct {
	name string
	file string   // a values file (helm install -f)
	set  []string // --set expressions, after the file
	// env is the container's variables the set must produce, as values
	// (variables from a Secret are checked by checkSecrets).
	env   map[string]string
	check func(t *testing.T, r *release)
}

func valueSets() []valueSet {
	return []valueSet{
		{
			name: "defaults",
			set:  []string{"image.repository=" + image, `config.ENRICHER_KAFKA_BROKERS=kafka-0.kafka:9092\,kafka-1.kafka:9092`},
			env: map[string]string{
				"ENRICHER_KAFKA_BROKERS":     brokers,
				"ENRICHER_HTTP_ADDR":         ":8080",
				"ENRICHER_SHUTDOWN_TIMEOUT":  "20s",
				"ENRICHER_BUDGET_STATE_FILE": "/var/lib/defender-enricher/budget.state",
				"GOMEMLIMIT":                 "200MiB",
			},
			check: func(t *testing.T, r *release) {
				pod := r.deployment.Spec.Template
				if got := *r.deployment.Spec.Replicas; got != 1 {
					t.Errorf("replicas %d, want 1", got)
				}
				if got := pod.Spec.Containers[0].Image; got != image+":0.1.0" {
					t.Errorf("image %q, want the appVersion's tag", got)
				}
				if got := *pod.Spec.TerminationGracePeriodSeconds; got != 30 {
					t.Errorf("terminationGracePeriodSeconds %d, want 30 (20s and a 10s margin)", got)
				}
				if _, ok := pod.Labels["azure.workload.identity/use"]; ok {
					t.Errorf("workload identity label without workload identity")
				}
				for _, forbidden := range []string{"AZURE_TENANT_ID", "AZURE_CLIENT_ID"} {
					if _, ok := envOf(pod.Spec.Containers[0])[forbidden]; ok {
						t.Errorf("%s set though azure is empty", forbidden)
					}
				}
				if r.serviceMonitor != nil || r.scaledObject != nil || r.networkPolicy != nil {
					t.Errorf("optional manifests rendered by default")
				}
				if r.checkPod == nil {
					t.Errorf("no test pod (checkTest.enabled is true by default)")
				}
				if !strings.Contains(r.files["defender-enricher/templates/NOTES.txt"], "rollout status deployment/enricher-defender-enricher") {
					t.Errorf("NOTES.txt does not show the readiness command:\n%s", r.files["defender-enricher/templates/NOTES.txt"])
				}
			},
		},
		{
			// The README's workload identity install, flag for flag.
			name: "workload identity",
			set: []string{
				"image.repository=" + image,
				"azure.workloadIdentity.enabled=true",
				"azure.workloadIdentity.clientId=" + clientID,
				"azure.tenantId=" + tenantID,
				`config.ENRICHER_KAFKA_BROKERS=kafka-0.kafka:9092\,kafka-1.kafka:9092`,
			},
			env: map[string]string{
				"AZURE_TENANT_ID":        tenantID,
				"AZURE_CLIENT_ID":        clientID,
				"ENRICHER_KAFKA_BROKERS": brokers,
			},
			check: func(t *testing.T, r *release) {
				for _, pod := range r.pods() {
					if got := pod.meta.Labels["azure.workload.identity/use"]; got != "true" {
						t.Errorf("%s: label azure.workload.identity/use %q, want \"true\"", pod.name, got)
					}
					if pod.spec.ServiceAccountName != r.serviceAccount.Name {
						t.Errorf("%s: service account %q, want %q", pod.name, pod.spec.ServiceAccountName, r.serviceAccount.Name)
					}
					env := envOf(pod.spec.Containers[0])
					if _, ok := env["ENRICHER_AZURE_CREDENTIAL"]; ok {
						t.Errorf("%s: ENRICHER_AZURE_CREDENTIAL set: the default credential takes workload identity", pod.name)
					}
					if _, ok := env["AZURE_CLIENT_SECRET"]; ok {
						t.Errorf("%s: AZURE_CLIENT_SECRET set with workload identity", pod.name)
					}
				}
				want := map[string]string{
					"azure.workload.identity/client-id": clientID,
					"azure.workload.identity/tenant-id": tenantID,
				}
				for k, v := range want {
					if got := r.serviceAccount.Annotations[k]; got != v {
						t.Errorf("service account annotation %s %q, want %q", k, got, v)
					}
				}
			},
		},
		{
			name: "client secret by reference",
			file: `
image: {repository: ` + image + `, tag: v1.2.3}
azure: {tenantId: ` + tenantID + `, clientId: ` + clientID + `}
config:
  ENRICHER_KAFKA_BROKERS: [kafka-0.kafka:9093, kafka-1.kafka:9093]
  ENRICHER_KAFKA_TLS: true
  ENRICHER_KAFKA_SASL_MECHANISM: scram-sha-512
  ENRICHER_KAFKA_SASL_USERNAME: defender-enricher
  ENRICHER_AZURE_CREDENTIAL: client-secret
secrets:
  existingSecret: defender-enricher
  env:
    AZURE_CLIENT_SECRET: client-secret
    ENRICHER_KAFKA_SASL_PASSWORD: kafka-password
`,
			env: map[string]string{
				"AZURE_TENANT_ID":               tenantID,
				"AZURE_CLIENT_ID":               clientID,
				"ENRICHER_KAFKA_BROKERS":        "kafka-0.kafka:9093,kafka-1.kafka:9093",
				"ENRICHER_KAFKA_TLS":            "true",
				"ENRICHER_KAFKA_SASL_MECHANISM": "scram-sha-512",
				"ENRICHER_KAFKA_SASL_USERNAME":  "defender-enricher",
				"ENRICHER_AZURE_CREDENTIAL":     "client-secret",
			},
			check: func(t *testing.T, r *release) {
				for _, pod := range r.pods() {
					env := envFrom(pod.spec.Containers[0])
					wantRef(t, pod.name, env, "AZURE_CLIENT_SECRET", "defender-enricher", "client-secret")
					wantRef(t, pod.name, env, "ENRICHER_KAFKA_SASL_PASSWORD", "defender-enricher", "kafka-password")
					if _, ok := env["ENRICHER_REDIS_URL"]; ok {
						t.Errorf("%s: ENRICHER_REDIS_URL set though not configured", pod.name)
					}
				}
				if got := r.deployment.Spec.Template.Spec.Containers[0].Image; got != image+":v1.2.3" {
					t.Errorf("image %q, want the tag given", got)
				}
				if _, ok := r.deployment.Spec.Template.Labels["azure.workload.identity/use"]; ok {
					t.Errorf("workload identity label with a client secret")
				}
			},
		},
		{
			name: "fleet: three replicas, Redis, ServiceMonitor, NetworkPolicy",
			file: fleetValues,
			env: map[string]string{
				"AZURE_TENANT_ID":        tenantID,
				"ENRICHER_KAFKA_BROKERS": brokers,
			},
			check: func(t *testing.T, r *release) {
				if got := *r.deployment.Spec.Replicas; got != 3 {
					t.Errorf("replicas %d, want 3", got)
				}
				checkFleet(t, r)
				if r.scaledObject != nil {
					t.Errorf("ScaledObject rendered with keda.enabled false")
				}
			},
		},
		{
			name: "fleet autoscaled by KEDA",
			file: fleetValues + `
keda:
  enabled: true
  inputPartitions: 6
  minReplicaCount: 2
  maxReplicaCount: 12
  lagThreshold: 500
  authenticationRef: kafka-keda
  extraMetadata: {tls: enable, sasl: scram_sha512}
  behavior:
    scaleDown:
      stabilizationWindowSeconds: 600
      policies: [{type: Pods, value: 1, periodSeconds: 120}]
`,
			env: map[string]string{"ENRICHER_KAFKA_BROKERS": brokers},
			check: func(t *testing.T, r *release) {
				if r.deployment.Spec.Replicas != nil {
					t.Errorf("replicas %d set: KEDA's HPA owns them", *r.deployment.Spec.Replicas)
				}
				checkFleet(t, r)
				so := r.scaledObject
				if so == nil {
					t.Fatal("no ScaledObject")
				}
				if so.Spec.ScaleTargetRef.Name != r.deployment.Name || so.Spec.ScaleTargetRef.Kind != "Deployment" {
					t.Errorf("scaleTargetRef %+v, want the Deployment %s", so.Spec.ScaleTargetRef, r.deployment.Name)
				}
				if *so.Spec.MinReplicaCount != 2 || *so.Spec.MaxReplicaCount != 6 {
					t.Errorf("replicas %d to %d, want 2 to 6 (12 capped at the 6 partitions)", *so.Spec.MinReplicaCount, *so.Spec.MaxReplicaCount)
				}
				if len(so.Spec.Triggers) != 1 || so.Spec.Triggers[0].Type != "kafka" {
					t.Fatalf("triggers %+v, want one kafka trigger", so.Spec.Triggers)
				}
				trig := so.Spec.Triggers[0]
				want := map[string]string{
					"bootstrapServers":   brokers,
					"consumerGroup":      "soc-enricher",
					"topic":              "mde.alerts",
					"lagThreshold":       "500",
					"offsetResetPolicy":  "earliest",
					"allowIdleConsumers": "false",
					"tls":                "enable",
					"sasl":               "scram_sha512",
				}
				for k, v := range want {
					if trig.Metadata[k] != v {
						t.Errorf("trigger metadata %s %q, want %q", k, trig.Metadata[k], v)
					}
				}
				if trig.AuthenticationRef == nil || trig.AuthenticationRef.Name != "kafka-keda" {
					t.Errorf("authenticationRef %+v, want kafka-keda", trig.AuthenticationRef)
				}
				if so.Spec.Advanced == nil || so.Spec.Advanced.HorizontalPodAutoscalerConfig.Behavior == nil ||
					*so.Spec.Advanced.HorizontalPodAutoscalerConfig.Behavior.ScaleDown.StabilizationWindowSeconds != 600 {
					t.Errorf("HPA behavior not passed on: %+v", so.Spec.Advanced)
				}
			},
		},
		{
			name: "mTLS files mounted from a secret",
			file: `
image: {repository: ` + image + `, digest: "sha256:` + strings.Repeat("ab", 32) + `"}
config:
  ENRICHER_KAFKA_BROKERS: kafka-0.kafka:9093
  ENRICHER_KAFKA_TLS: "true"
  ENRICHER_KAFKA_TLS_SERVER_NAME: kafka.internal.example.com
secrets:
  files:
    secretName: kafka-client-tls
    env:
      ENRICHER_KAFKA_TLS_CA_FILE: ca.crt
      ENRICHER_KAFKA_TLS_CERT_FILE: tls.crt
      ENRICHER_KAFKA_TLS_KEY_FILE: tls.key
`,
			env: map[string]string{
				"ENRICHER_KAFKA_TLS":             "true",
				"ENRICHER_KAFKA_TLS_SERVER_NAME": "kafka.internal.example.com",
				"ENRICHER_KAFKA_TLS_CA_FILE":     "/etc/defender-enricher/secrets/ca.crt",
				"ENRICHER_KAFKA_TLS_CERT_FILE":   "/etc/defender-enricher/secrets/tls.crt",
				"ENRICHER_KAFKA_TLS_KEY_FILE":    "/etc/defender-enricher/secrets/tls.key",
			},
			check: func(t *testing.T, r *release) {
				if got := r.deployment.Spec.Template.Spec.Containers[0].Image; got != image+"@sha256:"+strings.Repeat("ab", 32) {
					t.Errorf("image %q, want the digest", got)
				}
				for _, pod := range r.pods() {
					vol := volumeNamed(pod.spec, "secret-files")
					if vol == nil || vol.Secret == nil || vol.Secret.SecretName != "kafka-client-tls" {
						t.Fatalf("%s: no secret volume of kafka-client-tls: %+v", pod.name, vol)
					}
					if *vol.Secret.DefaultMode != 0o440 {
						t.Errorf("%s: secret files mode %o, want 0440", pod.name, *vol.Secret.DefaultMode)
					}
					keys := map[string]bool{}
					for _, item := range vol.Secret.Items {
						keys[item.Key] = item.Path == item.Key
					}
					mount := mountNamed(pod.spec.Containers[0], "secret-files")
					if mount == nil || !mount.ReadOnly {
						t.Fatalf("%s: secret files not mounted read-only: %+v", pod.name, mount)
					}
					env := envOf(pod.spec.Containers[0])
					for _, v := range []string{"ENRICHER_KAFKA_TLS_CA_FILE", "ENRICHER_KAFKA_TLS_CERT_FILE", "ENRICHER_KAFKA_TLS_KEY_FILE"} {
						dir, file, _ := strings.Cut(strings.TrimPrefix(env[v], mount.MountPath+"/"), "/")
						if !strings.HasPrefix(env[v], mount.MountPath+"/") || file != "" || !keys[dir] {
							t.Errorf("%s: %s=%q is not a file of the mounted keys %v", pod.name, v, env[v], keys)
						}
					}
				}
			},
		},
		{
			name: "every option, numbers and lists from a values file",
			file: everyOptionValues(),
			env:  everyOptionEnv(),
			check: func(t *testing.T, r *release) {
				pod := r.deployment.Spec.Template.Spec
				if got := *pod.TerminationGracePeriodSeconds; got != 100 {
					t.Errorf("terminationGracePeriodSeconds %d, want 100 (1m30s and a 10s margin)", got)
				}
				if got := pod.Containers[0].Ports[0].ContainerPort; got != 9090 {
					t.Errorf("container port %d, want 9090 of ENRICHER_HTTP_ADDR", got)
				}
				if got := r.deployment.Spec.Template.Annotations["prometheus.io/port"]; got != "9090" {
					t.Errorf("prometheus.io/port %q, want 9090", got)
				}
			},
		},
	}
}

// fleetValues is several replicas sharing one budget through Redis, with
// the optional manifests on.
const fleetValues = `
image: {repository: ` + image + `}
replicaCount: 3
azure: {tenantId: ` + tenantID + `, workloadIdentity: {enabled: true, clientId: ` + clientID + `}}
config:
  ENRICHER_KAFKA_BROKERS: kafka-0.kafka:9092,kafka-1.kafka:9092
  ENRICHER_CONSUMER_GROUP: soc-enricher
  ENRICHER_INPUT_TOPIC: mde.alerts
secrets:
  existingSecret: defender-enricher
  env: {ENRICHER_REDIS_URL: redis-url}
serviceMonitor:
  enabled: true
  labels: {release: prometheus}
networkPolicy:
  enabled: true
  ingressFrom:
    - namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: monitoring}}
  egress:
    kafka: {cidrs: [10.20.0.0/16], ports: [9092, 9093]}
    redis: {cidrs: [10.30.1.0/24], ports: [6380]}
    entraId: {cidrs: [20.190.128.0/18, 40.126.0.0/18]}
    defender: {cidrs: [52.100.0.0/16]}
`

// checkFleet checks what several replicas sharing Redis need.
func checkFleet(t *testing.T, r *release) {
	t.Helper()
	for _, pod := range r.pods() {
		env := envOf(pod.spec.Containers[0])
		if _, ok := env["ENRICHER_BUDGET_STATE_FILE"]; ok {
			t.Errorf("%s: ENRICHER_BUDGET_STATE_FILE set with Redis", pod.name)
		}
		wantRef(t, pod.name, envFrom(pod.spec.Containers[0]), "ENRICHER_REDIS_URL", "defender-enricher", "redis-url")
	}
	if r.pdb == nil {
		t.Fatal("no PodDisruptionBudget with several replicas")
	}
	if r.pdb.Spec.MaxUnavailable == nil || r.pdb.Spec.MaxUnavailable.IntValue() != 1 {
		t.Errorf("PDB maxUnavailable %v, want 1", r.pdb.Spec.MaxUnavailable)
	}

	sm := r.serviceMonitor
	if sm == nil {
		t.Fatal("no ServiceMonitor")
	}
	if sm.Metadata.Labels["release"] != "prometheus" {
		t.Errorf("ServiceMonitor labels %v lack release: prometheus", sm.Metadata.Labels)
	}
	if !selects(t, &sm.Spec.Selector, r.service.Labels) {
		t.Errorf("ServiceMonitor selector %v does not select the Service's labels %v", sm.Spec.Selector, r.service.Labels)
	}
	if len(sm.Spec.Endpoints) != 1 || sm.Spec.Endpoints[0].Port != r.service.Spec.Ports[0].Name || sm.Spec.Endpoints[0].Path != "/metrics" {
		t.Errorf("ServiceMonitor endpoints %+v, want /metrics on the Service's port %s", sm.Spec.Endpoints, r.service.Spec.Ports[0].Name)
	}

	np := r.networkPolicy
	if np == nil {
		t.Fatal("no NetworkPolicy")
	}
	for _, pod := range r.pods() {
		if !selects(t, &np.Spec.PodSelector, pod.meta.Labels) {
			t.Errorf("NetworkPolicy does not select %s", pod.name)
		}
	}
	if len(np.Spec.PolicyTypes) != 2 {
		t.Errorf("policy types %v, want Ingress and Egress", np.Spec.PolicyTypes)
	}
	if len(np.Spec.Ingress) != 1 || len(np.Spec.Ingress[0].Ports) != 1 || np.Spec.Ingress[0].Ports[0].Port.String() != "http" ||
		len(np.Spec.Ingress[0].From) != 1 {
		t.Errorf("ingress %+v, want the HTTP port from the monitoring namespace only", np.Spec.Ingress)
	}
	type dest struct {
		cidr, proto string
		port        int
	}
	allowed := map[dest]bool{}
	dns := map[string]int{} // protocol → peers allowed on port 53
	for _, rule := range np.Spec.Egress {
		if len(rule.To) == 0 || len(rule.Ports) == 0 {
			t.Errorf("egress rule %+v allows every destination or every port", rule)
		}
		for _, peer := range rule.To {
			for _, port := range rule.Ports {
				if peer.IPBlock != nil {
					allowed[dest{peer.IPBlock.CIDR, string(*port.Protocol), port.Port.IntValue()}] = true
				} else if port.Port.IntValue() == 53 {
					dns[string(*port.Protocol)]++
				}
			}
		}
	}
	for _, d := range []dest{
		{"10.20.0.0/16", "TCP", 9092}, {"10.20.0.0/16", "TCP", 9093}, {"10.30.1.0/24", "TCP", 6380},
		{"20.190.128.0/18", "TCP", 443}, {"40.126.0.0/18", "TCP", 443}, {"52.100.0.0/16", "TCP", 443},
	} {
		if !allowed[d] {
			t.Errorf("egress to %+v not allowed; allowed: %v", d, allowed)
		}
	}
	if len(allowed) != 6 {
		t.Errorf("egress allows %d CIDR and port pairs, want exactly 6: %v", len(allowed), allowed)
	}
	if len(dns) != 2 || dns["UDP"] != 1 || dns["TCP"] != 1 {
		t.Errorf("DNS egress %v (protocol: peers on port 53), want kube-dns on UDP and TCP", dns)
	}
}

// everyOption is a value for every option of the schema but the secret
// ones, as a values file gives it, and the variable it must become.
var everyOption = []struct{ name, yaml, env string }{
	{"ENRICHER_KAFKA_BROKERS", "[kafka-0:9093, kafka-1:9093]", "kafka-0:9093,kafka-1:9093"},
	{"ENRICHER_KAFKA_TLS", "true", "true"},
	{"ENRICHER_KAFKA_TLS_CA_FILE", "/etc/kafka/ca.pem", "/etc/kafka/ca.pem"},
	{"ENRICHER_KAFKA_TLS_CERT_FILE", "/etc/kafka/client.pem", "/etc/kafka/client.pem"},
	{"ENRICHER_KAFKA_TLS_KEY_FILE", "/etc/kafka/client.key", "/etc/kafka/client.key"},
	{"ENRICHER_KAFKA_TLS_SERVER_NAME", "kafka.example.com", "kafka.example.com"},
	{"ENRICHER_KAFKA_SASL_MECHANISM", "oauthbearer", "oauthbearer"},
	{"ENRICHER_KAFKA_OAUTH_SCOPE", "https://events.servicebus.windows.net/.default", "https://events.servicebus.windows.net/.default"},
	{"ENRICHER_KAFKA_SASL_USERNAME", "enricher", "enricher"},
	{"ENRICHER_KAFKA_COMPRESSION", "zstd", "zstd"},
	{"ENRICHER_INPUT_TOPIC", "in.alerts", "in.alerts"},
	{"ENRICHER_OUTPUT_TOPIC", "out.alerts", "out.alerts"},
	{"ENRICHER_DLQ_TOPIC", "out.dlq", "out.dlq"},
	{"ENRICHER_RETRY_TOPIC", "out.retry", "out.retry"},
	{"ENRICHER_RETRY_MAX_AGE", "12h", "12h"},
	{"ENRICHER_CONSUMER_GROUP", "soc", "soc"},
	{"ENRICHER_START_OFFSET", "latest", "latest"},
	{"ENRICHER_COMMIT_INTERVAL", "500ms", "500ms"},
	{"ENRICHER_KAFKA_SESSION_TIMEOUT", "45s", "45s"},
	{"ENRICHER_MAX_MESSAGE_BYTES", "1000000", "1000000"},
	{"ENRICHER_MAX_IN_FLIGHT", "5000", "5000"},
	{"ENRICHER_MAX_IN_FLIGHT_BYTES", "33554432", "33554432"},
	{"ENRICHER_MAX_RECORDS", `"2000"`, "2000"},
	{"ENRICHER_ALERT_ID_POINTER", "/data/alertId", "/data/alertId"},
	{"ENRICHER_DEFENDER_API_URL", "https://api-eu.securitycenter.microsoft.com", "https://api-eu.securitycenter.microsoft.com"},
	{"ENRICHER_DEFENDER_SCOPE", "https://api.securitycenter.microsoft.com/.default", "https://api.securitycenter.microsoft.com/.default"},
	{"ENRICHER_DEFENDER_RATE_LIMITS", "50/1m,750/1h", "50/1m,750/1h"},
	{"ENRICHER_DEFENDER_RESERVE", "0.25", "0.25"},
	{"ENRICHER_DEFENDER_TIMEOUT", "10s", "10s"},
	{"ENRICHER_REDIS_TIMEOUT", "250ms", "250ms"},
	{"ENRICHER_BUDGET_STATE_FILE", "/var/lib/defender-enricher/state", "/var/lib/defender-enricher/state"},
	{"ENRICHER_AZURE_CREDENTIAL", "managed-identity", "managed-identity"},
	{"ENRICHER_AZURE_DISABLE_INSTANCE_DISCOVERY", "false", "false"},
	{"ENRICHER_CACHE_SIZE", "50000", "50000"},
	{"ENRICHER_CACHE_TTL", "2h", "2h"},
	{"ENRICHER_NEGATIVE_CACHE_TTL", "10m", "10m"},
	{"ENRICHER_REUSE_USER", "false", "false"},
	{"ENRICHER_BREAKER_FAILURES", "7", "7"},
	{"ENRICHER_BREAKER_TIMEOUT", "1m", "1m"},
	{"ENRICHER_ON_UNAVAILABLE", "wait", "wait"},
	{"ENRICHER_MAX_ENRICH_WAIT", "5s", "5s"},
	{"ENRICHER_SHUTDOWN_TIMEOUT", "1m30s", "1m30s"},
	{"ENRICHER_HEALTH_STALL_TIMEOUT", "2m", "2m"},
	{"ENRICHER_HTTP_ADDR", "':9090'", ":9090"},
	{"ENRICHER_PPROF", "true", "true"},
	{"ENRICHER_LOG_LEVEL", "debug", "debug"},
	{"ENRICHER_LOG_FORMAT", "text", "text"},
	{"ENRICHER_OUTPUT_FORMAT", "ecs", "ecs"},
}

func everyOptionValues() string {
	var b strings.Builder
	b.WriteString("image: {repository: " + image + "}\nreplicaCount: 2\nconfig:\n")
	for _, o := range everyOption {
		fmt.Fprintf(&b, "  %s: %s\n", o.name, o.yaml)
	}
	return b.String()
}

func everyOptionEnv() map[string]string {
	env := map[string]string{}
	for _, o := range everyOption {
		env[o.name] = o.env
	}
	return env
}

func TestEveryOptionIsTried(t *testing.T) {
	tried := map[string]bool{}
	for _, o := range everyOption {
		tried[o.name] = true
	}
	secret := map[string]bool{}
	for _, v := range secretVariables {
		secret[v] = true
	}
	for _, name := range schemaOptions(t) {
		if !tried[name] && !secret[name] {
			t.Errorf("%s is in values.schema.json but not in everyOption: give it a value to render", name)
		}
	}
}

func TestValueSets(t *testing.T) {
	for _, vs := range valueSets() {
		t.Run(vs.name, func(t *testing.T) {
			vals := values(t, vs.file, vs.set...)
			r := mustRender(t, vals)
			checkRelease(t, r)
			for _, pod := range r.pods() {
				env := envOf(pod.spec.Containers[0])
				for name, want := range vs.env {
					if got, ok := env[name]; !ok || got != want {
						t.Errorf("%s: %s=%q (set %v), want %q", pod.name, name, got, ok, want)
					}
				}
			}
			if vs.check != nil {
				vs.check(t, r)
			}
			checkLint(t, vals)
		})
	}
}

// TestGracePeriod checks that the grace period follows the shutdown timeout
// as the connector reads it (a Go duration), rounded up, plus the margin.
func TestGracePeriod(t *testing.T) {
	for _, tc := range []struct {
		timeout string
		margin  int
		want    int64
	}{
		{"20s", 10, 30}, {"1m30s", 10, 100}, {"1500ms", 10, 12}, {"0.5s", 10, 11},
		{"2m", 5, 125}, {"1h", 10, 3610}, {"100ms", 1, 2}, {"1m0.25s", 10, 71},
	} {
		vals := values(t, "", "image.repository="+image, "config.ENRICHER_KAFKA_BROKERS=kafka:9092",
			"config.ENRICHER_SHUTDOWN_TIMEOUT="+tc.timeout, "shutdownGraceMarginSeconds="+strconv.Itoa(tc.margin))
		r := mustRender(t, vals)
		if got := *r.deployment.Spec.Template.Spec.TerminationGracePeriodSeconds; got != tc.want {
			t.Errorf("ENRICHER_SHUTDOWN_TIMEOUT=%s, margin %d: terminationGracePeriodSeconds %d, want %d", tc.timeout, tc.margin, got, tc.want)
		}
	}
}

// TestPodDisruptionBudget checks that a PDB exists exactly when more than
// one replica runs.
func TestPodDisruptionBudget(t *testing.T) {
	for _, tc := range []struct {
		set  []string
		want bool
	}{
		{[]string{"replicaCount=1"}, false},
		{[]string{"replicaCount=2", "config.ENRICHER_DEFENDER_RATE_LIMITS=50/1m\\,750/1h"}, true},
		{[]string{"replicaCount=2", "config.ENRICHER_DEFENDER_RATE_LIMITS=50/1m", "podDisruptionBudget.enabled=false"}, false},
		{[]string{"secrets.existingSecret=s", "secrets.env.ENRICHER_REDIS_URL=u", "keda.enabled=true", "keda.inputPartitions=1", "keda.maxReplicaCount=4"}, false},
		{[]string{"secrets.existingSecret=s", "secrets.env.ENRICHER_REDIS_URL=u", "keda.enabled=true", "keda.inputPartitions=3"}, true},
	} {
		set := append([]string{"image.repository=" + image, "config.ENRICHER_KAFKA_BROKERS=kafka:9092"}, tc.set...)
		r := mustRender(t, values(t, "", set...))
		if got := r.pdb != nil; got != tc.want {
			t.Errorf("%v: PodDisruptionBudget rendered %v, want %v", tc.set, got, tc.want)
		}
		if r.pdb != nil && !selects(t, r.pdb.Spec.Selector, r.deployment.Spec.Template.Labels) {
			t.Errorf("%v: the PDB does not select the pods", tc.set)
		}
	}
}

// A pod the chart renders: the Deployment's template or the test pod.
type renderedPod struct {
	name string
	meta *metav1.ObjectMeta
	spec *corev1.PodSpec
}

func (r *release) pods() []renderedPod {
	pods := []renderedPod{{"Deployment", &r.deployment.Spec.Template.ObjectMeta, &r.deployment.Spec.Template.Spec}}
	if r.checkPod != nil {
		pods = append(pods, renderedPod{"test pod", &r.checkPod.ObjectMeta, &r.checkPod.Spec})
	}
	return pods
}

// checkRelease checks what every rendering must hold.
func checkRelease(t *testing.T, r *release) {
	t.Helper()
	d := r.deployment
	if !selects(t, d.Spec.Selector, d.Spec.Template.Labels) {
		t.Errorf("the Deployment's selector %v does not select its pods %v", d.Spec.Selector, d.Spec.Template.Labels)
	}
	if r.checkPod != nil {
		if selects(t, d.Spec.Selector, r.checkPod.Labels) {
			t.Errorf("the Deployment's selector also selects the test pod: its ReplicaSet would adopt it")
		}
		if r.checkPod.Annotations["helm.sh/hook"] != "test" || r.checkPod.Spec.RestartPolicy != corev1.RestartPolicyNever {
			t.Errorf("test pod is not a helm test hook that runs once: %v %s", r.checkPod.Annotations, r.checkPod.Spec.RestartPolicy)
		}
		if args := r.checkPod.Spec.Containers[0].Args; len(args) != 1 || args[0] != "check" {
			t.Errorf("test pod args %v, want [check]", args)
		}
	}
	if args := d.Spec.Template.Spec.Containers[0].Args; len(args) != 1 || args[0] != "run" {
		t.Errorf("args %v, want [run]", args)
	}
	if !selects(t, &metav1.LabelSelector{MatchLabels: r.service.Spec.Selector}, d.Spec.Template.Labels) || len(r.service.Spec.Selector) == 0 {
		t.Errorf("the Service's selector %v does not select the pods", r.service.Spec.Selector)
	}
	if r.service.Spec.Ports[0].TargetPort.String() != "http" {
		t.Errorf("Service targets %s, want the pods' port http", r.service.Spec.Ports[0].TargetPort.String())
	}
	if r.serviceAccount != nil && (r.serviceAccount.AutomountServiceAccountToken == nil || *r.serviceAccount.AutomountServiceAccountToken) {
		t.Errorf("the ServiceAccount mounts its API token")
	}
	replicas := int32(1)
	if d.Spec.Replicas != nil {
		replicas = *d.Spec.Replicas
	}
	if r.scaledObject == nil && (r.pdb != nil) != (replicas > 1) {
		t.Errorf("%d replicas and PodDisruptionBudget rendered %v: want one exactly when replicas > 1", replicas, r.pdb != nil)
	}

	for _, pod := range r.pods() {
		checkPod(t, pod)
	}
	checkSecrets(t, r)
}

// checkPod checks a pod's security and wiring: Pod Security "restricted"
// as the admission plugin evaluates it, the fields the chart promises, the
// probes, the grace period and the volumes.
func checkPod(t *testing.T, pod renderedPod) {
	t.Helper()
	evaluator, err := policy.NewEvaluator(policy.DefaultChecks(), nil)
	if err != nil {
		t.Fatal(err)
	}
	level := psaapi.LevelVersion{Level: psaapi.LevelRestricted, Version: psaapi.LatestVersion()}
	if agg := policy.AggregateCheckResults(evaluator.EvaluatePod(level, pod.meta, pod.spec)); !agg.Allowed {
		t.Errorf("%s violates Pod Security restricted: %s: %s", pod.name, agg.ForbiddenReason(), agg.ForbiddenDetail())
	}

	spec := pod.spec
	psc := spec.SecurityContext
	if psc == nil || !isTrue(psc.RunAsNonRoot) || psc.RunAsUser == nil || *psc.RunAsUser != 65532 ||
		psc.SeccompProfile == nil || psc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
		t.Errorf("%s: pod security context %+v, want runAsNonRoot, runAsUser 65532, seccomp RuntimeDefault", pod.name, psc)
	}
	if spec.AutomountServiceAccountToken == nil || *spec.AutomountServiceAccountToken {
		t.Errorf("%s: the Kubernetes API token is mounted", pod.name)
	}
	if len(spec.Containers) != 1 || len(spec.InitContainers) != 0 {
		t.Fatalf("%s: %d containers and %d init containers, want one container", pod.name, len(spec.Containers), len(spec.InitContainers))
	}
	c := spec.Containers[0]
	sc := c.SecurityContext
	if sc == nil || sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation || !isTrue(sc.ReadOnlyRootFilesystem) ||
		sc.Capabilities == nil || len(sc.Capabilities.Drop) != 1 || sc.Capabilities.Drop[0] != "ALL" || len(sc.Capabilities.Add) != 0 ||
		!isTrue(sc.RunAsNonRoot) || sc.RunAsUser == nil || *sc.RunAsUser != 65532 {
		t.Errorf("%s: container security context %+v, want no privilege escalation, read-only root, capabilities dropped, user 65532", pod.name, sc)
	}
	if c.Resources.Requests.Memory().IsZero() || c.Resources.Limits.Memory().IsZero() || c.Resources.Requests.Cpu().IsZero() {
		t.Errorf("%s: resources %+v, want CPU and memory requests and a memory limit", pod.name, c.Resources)
	}

	env := envOf(c)
	names := map[string]bool{}
	for _, e := range c.Env {
		if names[e.Name] {
			t.Errorf("%s: %s set twice", pod.name, e.Name)
		}
		names[e.Name] = true
	}

	// The probes reach the HTTP address the connector listens on.
	addr := env["ENRICHER_HTTP_ADDR"]
	port, err := strconv.Atoi(addr[strings.LastIndex(addr, ":")+1:])
	if err != nil {
		t.Fatalf("%s: ENRICHER_HTTP_ADDR %q has no port", pod.name, addr)
	}
	if pod.name == "Deployment" {
		if len(c.Ports) != 1 || c.Ports[0].Name != "http" || int(c.Ports[0].ContainerPort) != port {
			t.Errorf("%s: ports %+v, want http on %d of ENRICHER_HTTP_ADDR", pod.name, c.Ports, port)
		}
		for _, p := range []struct {
			name  string
			probe *corev1.Probe
			path  string
		}{{"startup", c.StartupProbe, "/healthz"}, {"liveness", c.LivenessProbe, "/healthz"}, {"readiness", c.ReadinessProbe, "/readyz"}} {
			if p.probe == nil || p.probe.HTTPGet == nil || p.probe.HTTPGet.Path != p.path || p.probe.HTTPGet.Port.String() != "http" {
				t.Errorf("%s: %s probe %+v, want GET %s on port http", pod.name, p.name, p.probe, p.path)
			}
		}

		// SIGTERM's drain, flush and commit end before SIGKILL.
		shutdown, err := time.ParseDuration(env["ENRICHER_SHUTDOWN_TIMEOUT"])
		if err != nil {
			t.Fatalf("%s: ENRICHER_SHUTDOWN_TIMEOUT: %v", pod.name, err)
		}
		grace := spec.TerminationGracePeriodSeconds
		if grace == nil {
			t.Errorf("%s: no terminationGracePeriodSeconds", pod.name)
		} else if time.Duration(*grace)*time.Second <= shutdown {
			t.Errorf("%s: terminationGracePeriodSeconds %d, want more than ENRICHER_SHUTDOWN_TIMEOUT %s", pod.name, *grace, shutdown)
		}
	}

	// Every mount has its volume; what the connector writes is on an emptyDir.
	for _, m := range c.VolumeMounts {
		if volumeNamed(spec, m.Name) == nil {
			t.Errorf("%s: mount %s has no volume", pod.name, m.Name)
		}
	}
	state := mountNamed(c, "state")
	if state == nil || volumeNamed(spec, "state").EmptyDir == nil {
		t.Errorf("%s: no emptyDir for the budget state", pod.name)
	}
	if f, ok := env["ENRICHER_BUDGET_STATE_FILE"]; ok && state != nil && !strings.HasPrefix(f, state.MountPath+"/") {
		t.Errorf("%s: ENRICHER_BUDGET_STATE_FILE %q is not on the writable state volume %s", pod.name, f, state.MountPath)
	}
}

// secretValue matches what a secret value looks like in a manifest: a URL
// with credentials, a PEM block, a field named as a secret with a value.
var secretValue = regexp.MustCompile(`://[^/@\s"]*@|-----BEGIN|(?i)(password|secret|access_?key|token)["']?\s*:\s*["']?[^\s"'{]`)

// checkSecrets checks that no manifest holds a secret: no Secret is
// rendered, a secret variable only refers to a Secret, and no text looks
// like a credential.
func checkSecrets(t *testing.T, r *release) {
	t.Helper()
	for _, m := range r.manifests {
		if strings.Contains(m, "kind: Secret") {
			t.Errorf("a Secret is rendered:\n%s", m)
		}
		for _, line := range strings.Split(m, "\n") {
			if secretValue.MatchString(line) && !strings.Contains(line, "secretName:") && !strings.Contains(line, "automountServiceAccountToken") {
				t.Errorf("a manifest line looks like a secret value: %q", strings.TrimSpace(line))
			}
		}
	}
	for _, pod := range r.pods() {
		for _, e := range pod.spec.Containers[0].Env {
			for _, s := range secretVariables {
				if e.Name == s && (e.Value != "" || e.ValueFrom == nil || e.ValueFrom.SecretKeyRef == nil) {
					t.Errorf("%s: %s is not taken from a Secret: %+v", pod.name, s, e)
				}
			}
		}
		if len(pod.spec.Containers[0].EnvFrom) != 0 {
			t.Errorf("%s: envFrom would bring in every key of a Secret", pod.name)
		}
	}
}

// checkLint runs helm lint's rules on the chart with vals: chart file,
// values and schema, templates (rendered strictly, each manifest parsed, names
// and API versions checked). Information messages are allowed.
func checkLint(t *testing.T, vals map[string]any) {
	t.Helper()
	result := lint.RunAll(chartDir, vals, namespace)
	for _, m := range result.Messages {
		if m.Severity > support.InfoSev {
			t.Errorf("helm lint: %s", m)
		}
	}
}

func selects(t *testing.T, sel *metav1.LabelSelector, set map[string]string) bool {
	t.Helper()
	s, err := metav1.LabelSelectorAsSelector(sel)
	if err != nil {
		t.Fatalf("selector %v: %v", sel, err)
	}
	return !s.Empty() && s.Matches(labels.Set(set))
}

func envOf(c corev1.Container) map[string]string {
	env := map[string]string{}
	for _, e := range c.Env {
		if e.ValueFrom == nil {
			env[e.Name] = e.Value
		}
	}
	return env
}

func envFrom(c corev1.Container) map[string]*corev1.EnvVarSource {
	env := map[string]*corev1.EnvVarSource{}
	for _, e := range c.Env {
		if e.ValueFrom != nil {
			env[e.Name] = e.ValueFrom
		}
	}
	return env
}

func wantRef(t *testing.T, pod string, env map[string]*corev1.EnvVarSource, name, secret, key string) {
	t.Helper()
	ref := env[name]
	if ref == nil || ref.SecretKeyRef == nil || ref.SecretKeyRef.Name != secret || ref.SecretKeyRef.Key != key {
		t.Errorf("%s: %s from %+v, want the key %s of the Secret %s", pod, name, ref, key, secret)
	}
}

func volumeNamed(spec *corev1.PodSpec, name string) *corev1.Volume {
	for i := range spec.Volumes {
		if spec.Volumes[i].Name == name {
			return &spec.Volumes[i]
		}
	}
	return nil
}

func mountNamed(c corev1.Container, name string) *corev1.VolumeMount {
	for i := range c.VolumeMounts {
		if c.VolumeMounts[i].Name == name {
			return &c.VolumeMounts[i]
		}
	}
	return nil
}

func isTrue(b *bool) bool { return b != nil && *b }

// sortedKeys is for stable messages.
func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
