package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/portcullis/portcullis/internal/redistest"
)

// The container examples users copy (examples/container, examples/compose, examples/kubernetes):
// their policies pass `portcullis validate`, their manifests parse and agree with the policies
// (ports, mounts, secrets), and the compose example's policy and realm work against a real
// Keycloak and Redis. No compose engine or Kubernetes cluster runs here: README, "Containers".

// exampleSecrets are the ${env:…} values the examples' policies expect.
var exampleSecrets = []string{
	"GATEWAY_CLIENT_SECRET=demo-gateway-secret",
	"CORP_SECRET=x", "REDIS_PASSWORD=x", "PARTNER_API_KEY=partner-key",
	"SESSION_SECRET=0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
}

func TestContainerExamplePoliciesValidate(t *testing.T) {
	for _, p := range []string{
		"../examples/container/petstore.json",
		"../examples/compose/policy",
		"../examples/kubernetes/policy.json",
	} {
		t.Run(p, func(t *testing.T) {
			cmd := exampleCmd(p)
			cmd.Env = append(os.Environ(), exampleSecrets...)
			out, err := cmd.CombinedOutput()
			if err != nil || !strings.Contains(string(out), ": ok") || strings.Contains(string(out), "warning") {
				t.Errorf("portcullis validate -c %s: got %v\n%s\nwant ok without warnings", p, err, out)
			}
			// In a container the listeners must take connections from outside it, on the ports
			// the manifests publish.
			pol := readPolicyJSON(t, p)
			if pol.Listen != "0.0.0.0:9080" || pol.AdminListen != "0.0.0.0:9091" {
				t.Errorf("listen %q, admin_listen %q: want 0.0.0.0:9080 and 0.0.0.0:9091", pol.Listen, pol.AdminListen)
			}
		})
	}
}

func exampleCmd(policy string) *exec.Cmd { return exec.Command(binary, "validate", "-c", policy) }

type examplePolicy struct {
	Listen      string `json:"listen"`
	AdminListen string `json:"admin_listen"`
}

// readPolicyJSON reads a policy file, or the one file of a policy folder.
func readPolicyJSON(t *testing.T, p string) examplePolicy {
	t.Helper()
	if fi, err := os.Stat(p); err == nil && fi.IsDir() {
		files, _ := filepath.Glob(filepath.Join(p, "*.json"))
		if len(files) != 1 {
			t.Fatalf("%s: got %d policy files, want 1", p, len(files))
		}
		p = files[0]
	}
	var pol examplePolicy
	if err := json.Unmarshal([]byte(mustRead(t, p)), &pol); err != nil {
		t.Fatalf("%s: %v", p, err)
	}
	return pol
}

// yamlDocs decodes every document of a YAML file.
func yamlDocs(t *testing.T, path string) []map[string]any {
	t.Helper()
	dec := yaml.NewDecoder(bytes.NewReader([]byte(mustRead(t, path))))
	var docs []map[string]any
	for {
		var d map[string]any
		err := dec.Decode(&d)
		if errors.Is(err, io.EOF) {
			return docs
		}
		if err != nil {
			t.Fatalf("parsing %s: %v", path, err)
		}
		if d != nil {
			docs = append(docs, d)
		}
	}
}

// dig follows keys (string keys of maps, int indexes of lists) and returns what is there, or nil.
func dig(v any, path ...any) any {
	for _, p := range path {
		switch k := p.(type) {
		case string:
			m, ok := v.(map[string]any)
			if !ok {
				return nil
			}
			v = m[k]
		case int:
			l, ok := v.([]any)
			if !ok || k >= len(l) {
				return nil
			}
			v = l[k]
		}
	}
	return v
}

func TestKubernetesExample(t *testing.T) {
	dir := "../examples/kubernetes"
	byKind := map[string]map[string]any{}
	var files []string
	for _, f := range yamlDocs(t, filepath.Join(dir, "kustomization.yaml")) {
		for _, r := range f["resources"].([]any) {
			files = append(files, r.(string))
		}
	}
	for _, f := range files {
		for _, d := range yamlDocs(t, filepath.Join(dir, f)) {
			kind, _ := d["kind"].(string)
			name, _ := dig(d, "metadata", "name").(string)
			if kind == "" || name == "" || d["apiVersion"] == nil {
				t.Errorf("%s: a document without apiVersion, kind or metadata.name", f)
			}
			byKind[kind+"/"+name] = d
		}
	}
	dep := byKind["Deployment/portcullis"]
	if dep == nil {
		t.Fatalf("no Deployment portcullis among %v", slices.Sorted(maps.Keys(byKind)))
	}
	if got := dig(dep, "spec", "replicas"); got != 2 {
		t.Errorf("replicas: got %v, want 2", got)
	}
	pod := dig(dep, "spec", "template", "spec")
	c := dig(pod, "containers", 0)
	for _, check := range []struct {
		name string
		got  any
		want any
	}{
		{"liveness probe path", dig(c, "livenessProbe", "httpGet", "path"), "/healthz"},
		{"readiness probe path", dig(c, "readinessProbe", "httpGet", "path"), "/readyz"},
		{"probe port", dig(c, "readinessProbe", "httpGet", "port"), "admin"},
		{"admin port", dig(c, "ports", 1, "containerPort"), 9091},
		{"proxy port", dig(c, "ports", 0, "containerPort"), 9080},
		{"policy mount", dig(c, "volumeMounts", 0, "mountPath"), "/etc/portcullis"},
		{"policy volume", dig(pod, "volumes", 0, "configMap", "name"), "portcullis-policy"},
		{"runAsNonRoot", dig(pod, "securityContext", "runAsNonRoot"), true},
		{"runAsUser (the image's)", dig(pod, "securityContext", "runAsUser"), 65532},
		{"readOnlyRootFilesystem", dig(c, "securityContext", "readOnlyRootFilesystem"), true},
		{"allowPrivilegeEscalation", dig(c, "securityContext", "allowPrivilegeEscalation"), false},
		{"capabilities dropped", dig(c, "securityContext", "capabilities", "drop", 0), "ALL"},
		{"memory request", dig(c, "resources", "requests", "memory") != nil, true},
		{"secrets", dig(c, "envFrom", 0, "secretRef", "name"), "portcullis"},
		{"PDB", dig(byKind["PodDisruptionBudget/portcullis"], "spec", "minAvailable"), 1},
		{"Service target", dig(byKind["Service/portcullis"], "spec", "ports", 0, "targetPort"), "http"},
		{"Redis Service", dig(byKind["Service/redis"], "spec", "ports", 0, "port"), 6379},
	} {
		if fmt.Sprint(check.got) != fmt.Sprint(check.want) {
			t.Errorf("%s: got %v, want %v", check.name, check.got, check.want)
		}
	}
	// The ConfigMap carries policy.json, and the Secret every ${env:…} the policy names.
	kust := yamlDocs(t, filepath.Join(dir, "kustomization.yaml"))[0]
	if got := dig(kust, "configMapGenerator", 0, "files", 0); got != "policy.json" {
		t.Errorf("configMapGenerator files: got %v, want policy.json", got)
	}
	secret, _ := dig(byKind["Secret/portcullis"], "stringData").(map[string]any)
	for _, name := range envRefs(mustRead(t, filepath.Join(dir, "policy.json"))) {
		if _, ok := secret[name]; !ok {
			t.Errorf("the policy's ${env:%s} is not in Secret portcullis", name)
		}
	}
	// Redis: the limits and the sessions of the replicas.
	policy := mustRead(t, filepath.Join(dir, "policy.json"))
	for _, want := range []string{`"addr": "redis:6379"`, `"store": "redis"`, `"policy": "redis"`} {
		if !strings.Contains(policy, want) {
			t.Errorf("policy.json: no %s", want)
		}
	}
}

// envRefs lists the names of the ${env:NAME} references in s.
func envRefs(s string) []string {
	var names []string
	for {
		_, rest, ok := strings.Cut(s, "${env:")
		if !ok {
			return names
		}
		name, after, _ := strings.Cut(rest, "}")
		names = append(names, name)
		s = after
	}
}

func TestComposeExample(t *testing.T) {
	dir := "../examples/compose"
	docs := yamlDocs(t, filepath.Join(dir, "compose.yaml"))
	if len(docs) != 1 {
		t.Fatalf("compose.yaml: got %d documents, want 1", len(docs))
	}
	services, _ := docs[0]["services"].(map[string]any)
	for _, s := range []string{"portcullis", "keycloak", "redis", "petstore"} {
		if services[s] == nil {
			t.Errorf("compose.yaml: no service %s", s)
		}
	}
	gw := services["portcullis"]
	if got := dig(gw, "volumes", 0); got != "./policy:/etc/portcullis:ro" {
		t.Errorf("portcullis volume: got %v", got)
	}
	if got := dig(services["keycloak"], "volumes", 0); got != "./realm:/opt/keycloak/data/import:ro" {
		t.Errorf("keycloak volume: got %v", got)
	}
	// The gateway's client secret is the one the realm gives the client.
	var realm struct {
		Realm   string `json:"realm"`
		Clients []struct {
			ClientID string `json:"clientId"`
			Secret   string `json:"secret"`
		} `json:"clients"`
	}
	if err := json.Unmarshal([]byte(mustRead(t, filepath.Join(dir, "realm", "demo-realm.json"))), &realm); err != nil {
		t.Fatal(err)
	}
	secrets := map[string]string{}
	for _, c := range realm.Clients {
		secrets[c.ClientID] = c.Secret
	}
	if got := dig(gw, "environment", "GATEWAY_CLIENT_SECRET"); got != secrets["gateway"] || got == "" {
		t.Errorf("GATEWAY_CLIENT_SECRET: got %v, want the realm's gateway secret %q", got, secrets["gateway"])
	}

	// The policy and the realm, run: the realm imported into the test Keycloak, the policy
	// pointed at it, at a real Redis and at an upstream instead of the compose services.
	k := keycloakFor(t)
	ctx := t.Context()
	if _, err := k.Admin(ctx, "POST", "", []byte(mustRead(t, filepath.Join(dir, "realm", "demo-realm.json"))), nil); err != nil {
		t.Fatalf("importing the demo realm: %v", err)
	}
	t.Cleanup(func() {
		if _, err := k.Admin(context.Background(), "DELETE", "/"+realm.Realm, nil, nil); err != nil {
			t.Errorf("deleting the demo realm: %v", err)
		}
	})
	rd := redistest.Start(t)
	up := newUpstream(t, nil)
	policy := strings.NewReplacer(
		`"0.0.0.0:9080"`, `"127.0.0.1:0"`,
		`"0.0.0.0:9091"`, `"127.0.0.1:0"`,
		`"http://keycloak:8080"`, `"`+k.URL+`"`,
		`"redis:6379"`, `"`+rd.Addr+`"`,
		`"http://petstore:9100"`, `"`+up.URL+`"`,
	).Replace(mustRead(t, filepath.Join(dir, "policy", "portcullis.json")))
	g := startGateway(t, policy, "GATEWAY_CLIENT_SECRET="+secrets["gateway"])
	url := g.URL + "/petstore"

	if r := do(t, "GET", url, map[string]string{"apikey": "john-key"}); r.Status != 200 || !strings.Contains(r.Body, `"consumer":"JohnDoe"`) {
		t.Errorf("john-key: got %d %q, want 200 as JohnDoe", r.Status, r.Body)
	}
	bot, err := k.Token(ctx, realm.Realm, "fetch-bot", secrets["fetch-bot"])
	if err != nil {
		t.Fatalf("fetch-bot's token: %v", err)
	}
	var got []int
	for range 3 {
		got = append(got, do(t, "GET", url, bearerHeader(bot)).Status)
	}
	if fmt.Sprint(got) != "[200 200 429]" {
		t.Errorf("fetch-bot thrice (2 per 5 s, in Redis): got %v, want [200 200 429]", got)
	}
	alice, err := k.PasswordToken(ctx, realm.Realm, "portal-cli", "", "alice", "alice-demo-password")
	if err != nil {
		t.Fatalf("alice's token: %v", err)
	}
	if r := do(t, "GET", url, bearerHeader(alice)); r.Status != 200 || !strings.Contains(r.Body, `"consumer":"Engineers"`) {
		t.Errorf("alice (group engineering): got %d %q, want 200 as Engineers", r.Status, r.Body)
	}
}
