// Package charttest renders the Helm chart of deploy/helm/defender-enricher
// with Helm's own packages, as helm install and helm template do, and checks
// what it renders without a cluster: every manifest decodes strictly into
// its Kubernetes type, the pods pass Pod Security "restricted", and the
// values schema refuses what the connector could not run with.
package charttest

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"path"
	"sort"
	"strings"
	"testing"

	"helm.sh/helm/v4/pkg/chart/common"
	"helm.sh/helm/v4/pkg/chart/common/util"
	chartv2 "helm.sh/helm/v4/pkg/chart/v2"
	"helm.sh/helm/v4/pkg/chart/v2/loader"
	"helm.sh/helm/v4/pkg/engine"
	"helm.sh/helm/v4/pkg/strvals"
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"
)

// chartDir is the chart, relative to this package.
const chartDir = "../defender-enricher"

// The release every test renders.
const (
	releaseName = "enricher"
	namespace   = "security"
)

// loadChart loads the chart directory as helm install does (.helmignore
// applied, values.schema.json attached).
func loadChart(t *testing.T) *chartv2.Chart {
	t.Helper()
	c, err := loader.LoadDir(chartDir)
	if err != nil {
		t.Fatalf("load %s: %v", chartDir, err)
	}
	if len(c.Schema) == 0 {
		t.Fatalf("%s has no values.schema.json", chartDir)
	}
	return c
}

// render validates vals against the schema and renders every template, as
// helm template does; Strict makes a reference to a value that does not
// exist an error.
func render(t *testing.T, vals map[string]any) (map[string]string, error) {
	t.Helper()
	c := loadChart(t)
	opts := common.ReleaseOptions{Name: releaseName, Namespace: namespace, Revision: 1, IsInstall: true}
	top, err := util.ToRenderValues(c, vals, opts, nil)
	if err != nil {
		return nil, err
	}
	return engine.Engine{Strict: true}.Render(c, top)
}

// values builds user values from a values file's text and --set
// expressions, as helm install -f FILE --set EXPR does.
func values(t *testing.T, file string, set ...string) map[string]any {
	t.Helper()
	vals := map[string]any{}
	if file != "" {
		if err := yaml.Unmarshal([]byte(file), &vals); err != nil {
			t.Fatalf("values file: %v\n%s", err, file)
		}
	}
	for _, s := range set {
		if err := strvals.ParseInto(s, vals); err != nil {
			t.Fatalf("--set %s: %v", s, err)
		}
	}
	return vals
}

// serviceMonitor holds the fields of a monitoring.coreos.com/v1
// ServiceMonitor that the chart sets; decoding it strictly refuses any
// other.
type serviceMonitor struct {
	metav1.TypeMeta `json:",inline"`
	Metadata        metav1.ObjectMeta `json:"metadata"`
	Spec            struct {
		Selector  metav1.LabelSelector `json:"selector"`
		Endpoints []struct {
			Port              string           `json:"port"`
			Path              string           `json:"path"`
			Interval          string           `json:"interval"`
			ScrapeTimeout     string           `json:"scrapeTimeout"`
			Relabelings       []map[string]any `json:"relabelings"`
			MetricRelabelings []map[string]any `json:"metricRelabelings"`
		} `json:"endpoints"`
	} `json:"spec"`
}

// scaledObject holds the fields of a keda.sh/v1alpha1 ScaledObject that the
// chart sets.
type scaledObject struct {
	metav1.TypeMeta `json:",inline"`
	Metadata        metav1.ObjectMeta `json:"metadata"`
	Spec            struct {
		ScaleTargetRef struct {
			APIVersion string `json:"apiVersion"`
			Kind       string `json:"kind"`
			Name       string `json:"name"`
		} `json:"scaleTargetRef"`
		MinReplicaCount *int32 `json:"minReplicaCount"`
		MaxReplicaCount *int32 `json:"maxReplicaCount"`
		PollingInterval *int32 `json:"pollingInterval"`
		CooldownPeriod  *int32 `json:"cooldownPeriod"`
		Advanced        *struct {
			HorizontalPodAutoscalerConfig struct {
				Behavior *autoscalingv2.HorizontalPodAutoscalerBehavior `json:"behavior"`
			} `json:"horizontalPodAutoscalerConfig"`
		} `json:"advanced"`
		Triggers []struct {
			Type              string            `json:"type"`
			Metadata          map[string]string `json:"metadata"`
			AuthenticationRef *struct {
				Name string `json:"name"`
			} `json:"authenticationRef"`
		} `json:"triggers"`
	} `json:"spec"`
}

// release is what one rendering holds, each manifest decoded into its type.
type release struct {
	files          map[string]string // template path → rendered text, NOTES.txt included
	manifests      []string          // every YAML document, as rendered
	deployment     *appsv1.Deployment
	serviceAccount *corev1.ServiceAccount
	service        *corev1.Service
	pdb            *policyv1.PodDisruptionBudget
	networkPolicy  *networkingv1.NetworkPolicy
	serviceMonitor *serviceMonitor
	scaledObject   *scaledObject
	checkPod       *corev1.Pod
}

// mustRender renders vals and decodes every manifest strictly: unknown or
// duplicate fields, a wrong type or a kind the chart should not render fail
// the test.
func mustRender(t *testing.T, vals map[string]any) *release {
	t.Helper()
	files, err := render(t, vals)
	if err != nil {
		t.Fatalf("render: %v", err)
	}
	r := &release{files: files}
	names := make([]string, 0, len(files))
	for name := range files {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		if path.Ext(name) != ".yaml" || strings.HasPrefix(path.Base(name), "_") {
			continue
		}
		docs, err := splitDocuments(files[name])
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		for _, doc := range docs {
			r.manifests = append(r.manifests, doc)
			if err := r.decode(doc); err != nil {
				t.Fatalf("%s: %v\n%s", name, err, doc)
			}
		}
	}
	if r.deployment == nil || r.service == nil {
		t.Fatalf("no Deployment or Service rendered: %v", names)
	}
	return r
}

// splitDocuments returns the YAML documents of one rendered template that
// hold more than comments.
func splitDocuments(text string) ([]string, error) {
	reader := utilyaml.NewYAMLReader(bufio.NewReader(strings.NewReader(text)))
	var docs []string
	for {
		doc, err := reader.Read()
		if errors.Is(err, io.EOF) {
			return docs, nil
		}
		if err != nil {
			return nil, err
		}
		var probe map[string]any
		if err := yaml.Unmarshal(doc, &probe); err != nil {
			return nil, err
		}
		if len(probe) > 0 {
			docs = append(docs, string(doc))
		}
	}
}

func (r *release) decode(doc string) error {
	var tm metav1.TypeMeta
	if err := yaml.Unmarshal([]byte(doc), &tm); err != nil {
		return err
	}
	strict := func(into any) error { return yaml.UnmarshalStrict([]byte(doc), into) }
	once := func(taken bool) error {
		if taken {
			return fmt.Errorf("a second %s %s", tm.APIVersion, tm.Kind)
		}
		return nil
	}
	var err error
	switch tm.APIVersion + " " + tm.Kind {
	case "apps/v1 Deployment":
		if err = once(r.deployment != nil); err == nil {
			r.deployment = &appsv1.Deployment{}
			err = strict(r.deployment)
		}
	case "v1 ServiceAccount":
		if err = once(r.serviceAccount != nil); err == nil {
			r.serviceAccount = &corev1.ServiceAccount{}
			err = strict(r.serviceAccount)
		}
	case "v1 Service":
		if err = once(r.service != nil); err == nil {
			r.service = &corev1.Service{}
			err = strict(r.service)
		}
	case "policy/v1 PodDisruptionBudget":
		if err = once(r.pdb != nil); err == nil {
			r.pdb = &policyv1.PodDisruptionBudget{}
			err = strict(r.pdb)
		}
	case "networking.k8s.io/v1 NetworkPolicy":
		if err = once(r.networkPolicy != nil); err == nil {
			r.networkPolicy = &networkingv1.NetworkPolicy{}
			err = strict(r.networkPolicy)
		}
	case "monitoring.coreos.com/v1 ServiceMonitor":
		if err = once(r.serviceMonitor != nil); err == nil {
			r.serviceMonitor = &serviceMonitor{}
			err = strict(r.serviceMonitor)
		}
	case "keda.sh/v1alpha1 ScaledObject":
		if err = once(r.scaledObject != nil); err == nil {
			r.scaledObject = &scaledObject{}
			err = strict(r.scaledObject)
		}
	case "v1 Pod":
		if err = once(r.checkPod != nil); err == nil {
			r.checkPod = &corev1.Pod{}
			err = strict(r.checkPod)
		}
	default:
		err = fmt.Errorf("unexpected manifest %q %q", tm.APIVersion, tm.Kind)
	}
	return err
}
