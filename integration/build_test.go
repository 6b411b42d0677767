package integration

import (
	"strings"
	"testing"
)

// The binary the harness builds with plain `go build` (no ldflags) reports a version from its
// build info in /status, the start-up log and portcullis_build_info; the shutdown line prints
// its drain timeout as a duration, not nanoseconds.
func TestBuildVersionReported(t *testing.T) {
	g := startGateway(t, petstorePolicy("http://127.0.0.1:9100", ""))
	build, _ := g.status()["build"].(string)
	if build == "" {
		t.Fatalf("/status build: got empty, want the binary's version")
	}
	if got := g.metric("portcullis_build_info", `version="`+build+`"`, `goversion="go`); got != 1 {
		t.Errorf("portcullis_build_info{version=%q}: got %v, want 1", build, got)
	}
	g.stop()
	logs := g.stderr.String()
	if !strings.Contains(logs, `"build":"`+build+`"`) {
		t.Errorf("start-up log: got\n%s\nwant a \"build\":%q attribute", logs, build)
	}
	if !strings.Contains(logs, `"timeout":"30s"`) {
		t.Errorf("shutdown log: got\n%s\nwant \"timeout\":\"30s\"", logs)
	}
}
