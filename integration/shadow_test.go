package integration

import (
	"encoding/json"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestShadowPolicy serves the petstore policy with a candidate that denies JohnDoe: the client
// gets the served answers, each difference is logged and counted once, limits are consumed
// once, and a changed candidate file is reloaded.
func TestShadowPolicy(t *testing.T) {
	up := newUpstream(t, nil)
	served := petstorePolicy(up.URL, "")
	candidate := strings.Replace(served, `"deny": ["Mallory"]`, `"deny": ["Mallory", "JohnDoe"]`, 1)
	if candidate == served {
		t.Fatal("the candidate is the served policy: the petstore policy changed")
	}
	candidatePath := filepath.Join(t.TempDir(), "candidate.json")
	writeFileAtomically(t, candidatePath, candidate)
	gw := startGatewayArgs(t, served, []string{"--shadow", candidatePath})
	url := gw.URL + "/petstore"

	st := gw.status()
	sh, _ := st["shadow"].(map[string]any)
	if sh == nil || sh["version"] == "" || sh["version"] == st["version"] {
		t.Fatalf("/status shadow: got %v, want the candidate's version (served %v)", st["shadow"], st["version"])
	}
	for _, r := range []string{"same", "different", "not_comparable", "dropped"} {
		if got := gw.metric("portcullis_shadow_decisions_total", `result="`+r+`"`); got != 0 {
			t.Errorf("%s at start: got %v, want 0", r, got)
		}
	}

	requests := []struct {
		key  string
		want int // the served policy's answer
	}{
		{"john-key", 200}, {"john-key", 200}, // the candidate denies them: 2 different
		{"", 401},                                            // same
		{"bot-key", 200}, {"bot-key", 200}, {"bot-key", 429}, // 2 same; the limit's refusal not comparable
	}
	for i, r := range requests {
		h := map[string]string{}
		if r.key != "" {
			h["apikey"] = r.key
		}
		if got := do(t, "GET", url, h); got.Status != r.want {
			t.Fatalf("request %d (%q): got %d %s, want %d (the served policy's answer)", i+1, r.key, got.Status, got.Body, r.want)
		}
	}
	want := map[string]float64{"same": 3, "different": 2, "not_comparable": 1, "dropped": 0}
	waitShadowCounts(t, gw, want)
	if got := strings.Count(gw.stderr.String(), `"msg":"shadow_difference"`); got != 2 {
		t.Errorf("shadow_difference lines: got %d, want 2\n%s", got, gw.stderr)
	}
	// Each names its request in the access log.
	for _, l := range strings.Split(gw.stderr.String(), "\n") {
		var d struct {
			Msg       string `json:"msg"`
			RequestID string `json:"request_id"`
		}
		if json.Unmarshal([]byte(l), &d) != nil || d.Msg != "shadow_difference" {
			continue
		}
		if d.RequestID == "" || !strings.Contains(gw.stdout.String(), `"request_id":"`+d.RequestID+`"`) {
			t.Errorf("shadow_difference request_id %q is not in the access log", d.RequestID)
		}
	}
	for _, secret := range []string{"john-key", "bot-key"} {
		if strings.Contains(gw.stderr.String(), secret) {
			t.Errorf("the operational log shows the key %q", secret)
		}
	}
	if got := gw.metric("portcullis_requests_total", `consumer="FetchBot"`); got != 3 {
		t.Errorf("FetchBot requests: got %v, want 3", got)
	}

	t.Run("a changed candidate is reloaded", func(t *testing.T) {
		v1 := sh["version"]
		writeFileAtomically(t, candidatePath, served)
		gw.waitStatus("the new candidate", func(st map[string]any) bool {
			sh, _ := st["shadow"].(map[string]any)
			return sh != nil && sh["version"] != v1
		})
		if got := do(t, "GET", url, map[string]string{"apikey": "john-key"}); got.Status != 200 {
			t.Fatalf("john-key: got %d, want 200", got.Status)
		}
		want["same"]++
		waitShadowCounts(t, gw, want)
	})

	t.Run("a broken candidate keeps the previous one", func(t *testing.T) {
		v := gw.status()["shadow"].(map[string]any)["version"]
		writeFileAtomically(t, candidatePath, `{ "consumers": [ { "username": 42 } ] `)
		st := gw.waitStatus("a shadow reload error", func(st map[string]any) bool {
			sh, _ := st["shadow"].(map[string]any)
			return sh != nil && sh["last_reload_error"] != nil
		})
		if got := st["shadow"].(map[string]any)["version"]; got != v {
			t.Errorf("candidate version: got %v, want the previous %v", got, v)
		}
		if got := do(t, "GET", url, map[string]string{"apikey": "john-key"}); got.Status != 200 {
			t.Fatalf("john-key: got %d, want 200 (still serving)", got.Status)
		}
		want["same"]++
		waitShadowCounts(t, gw, want)
	})

	t.Run("promote makes the candidate the served policy", func(t *testing.T) {
		writeFileAtomically(t, candidatePath, candidate) // JohnDoe denied again
		v := gw.status()["version"]
		out, err := exec.Command(binary, "promote", "-c", gw.PolicyPath, candidatePath).CombinedOutput()
		if err != nil {
			t.Fatalf("promote: %v\n%s", err, out)
		}
		gw.waitStatus("the promoted policy", func(st map[string]any) bool { return st["version"] != v })
		if got := do(t, "GET", url, map[string]string{"apikey": "john-key"}); got.Status != 403 {
			t.Fatalf("john-key after promote: got %d, want 403 (the candidate's answer)", got.Status)
		}
	})
}

// waitShadowCounts polls /metrics until the shadow counters are want (the candidate decides
// off the response path), failing after a deadline.
func waitShadowCounts(t *testing.T, gw *gatewayProc, want map[string]float64) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		got := map[string]float64{}
		same := true
		for r, w := range want {
			got[r] = gw.metric("portcullis_shadow_decisions_total", `result="`+r+`"`)
			same = same && got[r] == w
		}
		if same {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("shadow decisions: got %v, want %v\nstderr:\n%s", got, want, gw.stderr)
		}
		time.Sleep(20 * time.Millisecond) // polling interval of a readiness check
	}
}
