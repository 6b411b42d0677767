package integration

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

// runCLI runs the binary and returns its output and exit code.
func runCLI(t *testing.T, stdin string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	cmd := exec.Command(binary, args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	cmd.Stdin = strings.NewReader(stdin)
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		code = ee.ExitCode()
	case err != nil:
		t.Fatalf("running portcullis %v: %v", args, err)
	}
	return out.String(), errb.String(), code
}

func writeTemp(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestValidateCommand(t *testing.T) {
	good := writeTemp(t, "good.json", petstorePolicy("http://127.0.0.1:9100", ""))
	bad := writeTemp(t, "bad.json", `{
  "idps": [ { "name": "keys", "type": "key-auth", "colour": "red" } ],
  "consumers": [
    { "username": "a", "idps": [ { "idp": "nope", "key": "k" } ] },
    { "username": "b", "idps": [ { "idp": "keys", "key": "same" } ] },
    { "username": "c", "idps": [ { "idp": "keys", "key": "same" } ] }
  ],
  "routes": [ { "name": "r", "paths": ["/r"], "upstream": { "targets": [ { "url": "http://127.0.0.1:1" } ] },
                "consumers": { "allow": ["zed"] } } ]
}`)

	capture := writeTemp(t, "capture.json", strings.Replace(petstorePolicy("http://127.0.0.1:9100", ""), `"/petstore/{rest:.*}"`, `"/petstore/{id:(cats|dogs)}"`, 1))

	tests := []struct {
		name     string
		path     string
		code     int
		wantOut  []string
		dontWant []string
	}{
		{name: "valid policy", path: good, code: 0, wantOut: []string{"ok"}},
		{name: "a capture group is a positioned error, not a panic", path: capture, code: 1, wantOut: []string{
			`capture.json:12:50: $.routes[0].paths[1]: invalid path template "/petstore/{id:(cats|dogs)}": the pattern of {id} has a capture group, which is not allowed: write (?:...) instead of (...)`,
		}, dontWant: []string{"internal error", "panic"}},
		{name: "every problem at once", path: bad, code: 1, wantOut: []string{
			`bad.json:2:51: $.idps[0].colour: unknown field "colour"`, // at its key
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			stdout, stderr, code := runCLI(t, "", "validate", "-c", tt.path)
			if code != tt.code {
				t.Fatalf("exit code: got %d, want %d\nstdout: %s\nstderr: %s", code, tt.code, stdout, stderr)
			}
			for _, w := range tt.wantOut {
				if !strings.Contains(stdout+stderr, w) {
					t.Errorf("output lacks %q:\n%s%s", w, stdout, stderr)
				}
			}
			for _, w := range tt.dontWant {
				if strings.Contains(stdout+stderr, w) {
					t.Errorf("output has %q:\n%s%s", w, stdout, stderr)
				}
			}
		})
	}

	t.Run("semantic problems are all reported", func(t *testing.T) {
		// Without the schema error, the cross-reference checks run and report together.
		fixed := strings.Replace(mustRead(t, bad), `, "colour": "red"`, "", 1)
		p := writeTemp(t, "bad2.json", fixed)
		_, stderr, code := runCLI(t, "", "validate", "-c", p)
		if code != 1 {
			t.Fatalf("exit code: got %d, want 1", code)
		}
		for _, w := range []string{`$.consumers[0].idps[0].idp`, `$.consumers[2].idps[0]`, `$.routes[0].consumers.allow[0]`, "3 problem(s)"} {
			if !strings.Contains(stderr, w) {
				t.Errorf("output lacks %q:\n%s", w, stderr)
			}
		}
		if strings.Contains(stderr, "same") {
			t.Errorf("the duplicate key's value appears in the output:\n%s", stderr)
		}
	})
}

func mustRead(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestExplainCommand(t *testing.T) {
	policy := writeTemp(t, "p.json", petstorePolicy("http://127.0.0.1:9100", ""))
	tests := []struct {
		name string
		args []string
		code int
		want []string
	}{
		{"forwarded", []string{"-H", "apikey: bot-key", "GET", "/petstore/x"}, 0,
			[]string{`route "petstore"`, `names consumer "FetchBot"`, "limit-count 2 per 5s of consumer:FetchBot", "=> forwarded"}},
		{"no key", []string{"GET", "/petstore"}, 1,
			[]string{"no credential in request", `=> 401 {"message":"Missing API key in request"}`}},
		{"forbidden", []string{"-H", "apikey: mallory-key", "GET", "http://localhost/petstore"}, 1,
			[]string{`consumer Mallory is denied on route petstore`, "=> 403"}},
		{"no route", []string{"GET", "/elsewhere"}, 1, []string{"no route matches", "=> 404"}},
		{"spoofed identity is dropped", []string{"-H", "apikey: john-key", "-H", "X-Consumer-Username: root", "GET", "/petstore"}, 0,
			[]string{"dropped client-sent identity headers X-Consumer-Username", `consumer "JohnDoe"`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			stdout, stderr, code := runCLI(t, "", append([]string{"explain", "-c", policy}, tt.args...)...)
			if code != tt.code {
				t.Fatalf("exit code: got %d, want %d\n%s%s", code, tt.code, stdout, stderr)
			}
			for _, w := range tt.want {
				if !strings.Contains(stdout, w) {
					t.Errorf("output lacks %q:\n%s", w, stdout)
				}
			}
		})
	}
}

// TestDemo runs `portcullis demo` as a user would (from a folder without the examples, so the
// built-in policy is used) and checks the scenario on its fixed ports.
func TestDemo(t *testing.T) {
	for _, addr := range []string{"127.0.0.1:9080", "127.0.0.1:9091", "127.0.0.1:9100"} {
		if c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond); err == nil {
			c.Close()
			t.Skipf("%s is in use on this machine; the demo needs it", addr)
		}
	}
	cmd := exec.Command(binary, "demo")
	cmd.Dir = t.TempDir()
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr lockedBuffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	defer func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			_ = cmd.Process.Kill()
			t.Errorf("demo did not stop on SIGTERM")
		}
	}()

	ready := make(chan string, 1)
	go func() {
		var text strings.Builder
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			text.WriteString(sc.Text() + "\n")
			if strings.HasPrefix(sc.Text(), "Ctrl-C") {
				ready <- text.String()
			}
		}
	}()
	var banner string
	select {
	case banner = <-ready:
	case err := <-done:
		t.Fatalf("demo exited: %v\n%s", err, stderr.String())
	case <-time.After(60 * time.Second):
		t.Fatalf("demo did not print its banner\n%s", stderr.String())
	}
	if !strings.Contains(banner, "curl -i -H 'apikey: john-key' http://127.0.0.1:9080/petstore") {
		t.Errorf("banner lacks the curl commands:\n%s", banner)
	}
	url := "http://127.0.0.1:9080/petstore"
	if r := do(t, "GET", url, nil); r.Status != 401 {
		t.Errorf("no key: got %d, want 401", r.Status)
	}
	r := do(t, "GET", url, map[string]string{"apikey": "john-key"})
	if r.Status != 200 || !strings.Contains(r.Body, `"consumer":"JohnDoe"`) {
		t.Errorf("john-key: got %d %s, want 200 from the petstore as JohnDoe", r.Status, r.Body)
	}
	for i, want := range []int{200, 200, 429} {
		if r := do(t, "GET", url, map[string]string{"apikey": "bot-key"}); r.Status != want {
			t.Errorf("bot-key request %d: got %d, want %d", i+1, r.Status, want)
		}
	}
}

// TestReadmePoliciesValidate keeps the README honest: every complete policy it shows (a JSON
// block that is a whole object with idps, not a consumer) passes `portcullis validate`.
func TestReadmePoliciesValidate(t *testing.T) {
	readme := mustRead(t, "../README.md")
	blocks := regexp.MustCompile("(?s)```json\n(.*?)```").FindAllStringSubmatch(readme, -1)
	n := 0
	for i, b := range blocks {
		var doc map[string]any
		if json.Unmarshal([]byte(b[1]), &doc) != nil || doc["idps"] == nil || doc["username"] != nil {
			continue // a fragment
		}
		n++
		t.Run(fmt.Sprintf("block %d", i), func(t *testing.T) {
			p := writeTemp(t, "readme.json", b[1])
			cmd := exec.Command(binary, "validate", "-c", p)
			cmd.Env = append(os.Environ(), "JOHN_KEY=k", "CORP_SECRET=s", "PARTNERS_SECRET=s", "REDIS_PASSWORD=s", "PARTNER_HMAC=s",
				"SESSION_SECRET=a-session-secret-of-at-least-32-bytes")
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Errorf("README policy block %d does not validate: %v\n%s", i, err, out)
			}
		})
	}
	if n < 2 {
		t.Fatalf("found %d complete policies in the README, want at least 2", n)
	}
}
