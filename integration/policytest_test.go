package integration

import (
	"encoding/xml"
	"strings"
	"testing"
)

// TestPolicyTestCLI runs `portcullis test` as CI would: the committed petstore test file
// passes, and a file with failing cases exits 1, names each failure with its trace, and its
// JUnit report parses with the failures counted.
func TestPolicyTestCLI(t *testing.T) {
	const policy, tests = "../examples/petstore.json", "../examples/tests/petstore.test.json"
	t.Run("README quotes the petstore test file", func(t *testing.T) {
		if !strings.Contains(mustRead(t, "../README.md"), "```json\n"+mustRead(t, tests)+"```") {
			t.Errorf("README's \"Testing a policy\" does not quote %s as it is", tests)
		}
	})
	t.Run("petstore passes", func(t *testing.T) {
		stdout, stderr, code := runCLI(t, "", "test", "-c", policy, tests)
		if code != 0 || stdout != "7 passed, 0 failed\n" {
			t.Fatalf("got exit %d, stdout %q, stderr %q; want 0 and \"7 passed, 0 failed\"", code, stdout, stderr)
		}
	})

	failing := writeTemp(t, "failing.test.json", `{
  "tests": [
    { "name": "FetchBot is not limited", "request": { "url": "/petstore", "apikey": "bot-key" }, "after": 2,
      "expect": { "status": 200, "consumer": "FetchBot" } },
    { "name": "JohnDoe is FetchBot", "request": { "url": "/petstore", "apikey": "john-key" },
      "expect": { "status": 200, "consumer": "FetchBot", "headers": { "X-Consumer-Username": "FetchBot" } } },
    { "name": "no key is fine", "request": { "url": "/petstore" }, "expect": { "status": 401 } }
  ]
}`)
	t.Run("text", func(t *testing.T) {
		stdout, stderr, code := runCLI(t, "", "test", "-c", policy, tests, failing)
		if code != 1 {
			t.Fatalf("got exit %d, want 1\n%s%s", code, stdout, stderr)
		}
		for _, w := range []string{
			failing + `:3 "FetchBot is not limited": status: got 429, want 200`,
			"GET /petstore after 2 identical request(s)",
			`FAIL limit        limit-count 2 per 5s of consumer:FetchBot exceeded`,
			`=> 429 {"message":"Too Many Requests"}`,
			failing + `:5 "JohnDoe is FetchBot": consumer: got "JohnDoe", want "FetchBot"; header X-Consumer-Username: got "JohnDoe", want "FetchBot"`,
			"=> allowed (200; the upstream is not called)",
			"8 passed, 2 failed\n",
		} {
			if !strings.Contains(stdout, w) {
				t.Errorf("stdout lacks %q:\n%s", w, stdout)
			}
		}
		if strings.Contains(stdout, "no key is fine") {
			t.Errorf("stdout names a passing case:\n%s", stdout)
		}
	})
	t.Run("junit", func(t *testing.T) {
		stdout, stderr, code := runCLI(t, "", "test", "-c", policy, "--format", "junit", tests, failing)
		if code != 1 {
			t.Fatalf("got exit %d, want 1\n%s%s", code, stdout, stderr)
		}
		var report struct {
			Tests    int `xml:"tests,attr"`
			Failures int `xml:"failures,attr"`
			Suites   []struct {
				Name     string `xml:"name,attr"`
				Tests    int    `xml:"tests,attr"`
				Failures int    `xml:"failures,attr"`
				Cases    []struct {
					Name    string `xml:"name,attr"`
					Failure *struct {
						Message string `xml:"message,attr"`
						Text    string `xml:",chardata"`
					} `xml:"failure"`
				} `xml:"testcase"`
			} `xml:"testsuite"`
		}
		if err := xml.Unmarshal([]byte(stdout), &report); err != nil {
			t.Fatalf("the JUnit report does not parse: %v\n%s", err, stdout)
		}
		if report.Tests != 10 || report.Failures != 2 || len(report.Suites) != 2 {
			t.Fatalf("got %d tests, %d failures, %d suites; want 10, 2, 2\n%s", report.Tests, report.Failures, len(report.Suites), stdout)
		}
		s := report.Suites[1]
		if s.Name != failing || s.Tests != 3 || s.Failures != 2 {
			t.Fatalf("got suite %q with %d tests, %d failures; want %s, 3, 2", s.Name, s.Tests, s.Failures, failing)
		}
		var failed []string
		for _, c := range s.Cases {
			if c.Failure != nil {
				failed = append(failed, c.Name+": "+c.Failure.Message)
				if !strings.Contains(c.Failure.Text, "match        route \"petstore\"") {
					t.Errorf("failure of %q lacks the trace:\n%s", c.Name, c.Failure.Text)
				}
			}
		}
		if len(failed) != 2 || !strings.HasPrefix(failed[0], "FetchBot is not limited: status: got 429, want 200") ||
			!strings.HasPrefix(failed[1], `JohnDoe is FetchBot: consumer: got "JohnDoe", want "FetchBot"`) {
			t.Errorf("got failures %q", failed)
		}
		if !strings.Contains(stderr, "8 passed, 2 failed") {
			t.Errorf("stderr lacks the summary: %q", stderr)
		}
	})
	t.Run("unknown field", func(t *testing.T) {
		bad := writeTemp(t, "bad.test.json", `{"tests": [
  {"name": "a", "request": {"url": "/petstore", "api_key": "bot-key"}, "expect": {"status": 200}}
]}`)
		stdout, stderr, code := runCLI(t, "", "test", "-c", policy, bad)
		if code != 1 || !strings.Contains(stderr, bad+`:2:49: $.tests[0].request.api_key: unknown field "api_key"`) {
			t.Errorf("got exit %d, stderr %q, stdout %q; want 1 and the unknown field located", code, stderr, stdout)
		}
	})
}
