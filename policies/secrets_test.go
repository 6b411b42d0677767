package policies

import (
	"context"
	"net/http/httptest"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func TestResolve(t *testing.T) {
	opts := testOptions(
		map[string]string{"USER": "bob", "EMPTY": "", "SECRET": "TOPSECRET"},
		map[string]string{"/s/key": "abc\n\n", "/s/crlf": "abc\r\n", "/s/plain": "abc"},
	)
	r := &resolver{lookupEnv: opts.LookupEnv, readFile: opts.ReadFile}
	tests := []struct {
		name     string
		in       string
		want     string
		problems []string
	}{
		{"no reference", "plain $ text {x}", "plain $ text {x}", nil},
		{"whole env", "${env:USER}", "bob", nil},
		{"embedded env", "hello ${env:USER}, bye ${env:USER}", "hello bob, bye bob", nil},
		{"empty env is set", "[${env:EMPTY}]", "[]", nil},
		{"file trims one newline", "${file:/s/key}", "abc\n", nil},
		{"file trims crlf", "${file:/s/crlf}", "abc", nil},
		{"file without newline", "k=${file:/s/plain}", "k=abc", nil},
		{"escape", "cost $${env:USER} and $$5", "cost ${env:USER} and $$5", nil},
		{"missing env", "${env:NOPE}", "", []string{"environment variable NOPE is not set"}},
		{"missing file", "${file:/s/nope}", "", []string{"cannot read secret file /s/nope: file does not exist"}},
		{"never the resolved value", "${env:SECRET}${env:NOPE}", "TOPSECRET", []string{"environment variable NOPE is not set"}},
		{"unsupported", "${vault:x}", "", []string{`unsupported reference "${vault:x}": use ${env:NAME} or ${file:PATH} (write "$${" for a literal "${")`}},
		{"unterminated", "a ${env:USER", "a ${env:USER", []string{`unterminated "${" reference (write "$${" for a literal "${")`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, problems := r.resolve(tt.in)
			if got != tt.want {
				t.Errorf("got %q, want %q", got, tt.want)
			}
			if !reflect.DeepEqual(problems, tt.problems) {
				t.Errorf("problems: got %q, want %q", problems, tt.problems)
			}
			for _, p := range problems {
				if strings.Contains(p, "TOPSECRET") {
					t.Errorf("problem %q reveals a secret", p)
				}
			}
		})
	}
}

func TestLoadSecrets(t *testing.T) {
	policy := `{
  "idps": [ { "name": "keys", "type": "key-auth" } ],
  "consumers": [
    { "username": "a", "idps": [ { "idp": "keys", "key": "${env:A_KEY}" } ] },
    { "username": "b", "idps": [ { "idp": "keys", "key": "${file:/run/b-key}" } ],
      "plugins": { "limit-count": { "count": 1, "time_window": 1, "rejected_msg": "b: $${not a ref} ${env:WHO}" } } }
  ]
}`
	dir := writeFiles(t, map[string]string{"p.json": policy})
	path := filepath.Join(dir, "p.json")

	t.Run("resolved", func(t *testing.T) {
		opts := testOptions(map[string]string{"A_KEY": "key-of-a", "WHO": "team"}, map[string]string{"/run/b-key": "key-of-b\n"})
		snap, err := Load(path, opts)
		if err != nil {
			t.Fatalf("Load: %v", err)
		}
		defer snap.Close()
		if got, want := snap.Policy.Consumers[1].Plugins.LimitCount.RejectedMsg, "b: ${not a ref} team"; got != want {
			t.Errorf("rejected_msg: got %q, want %q", got, want)
		}
		for _, tt := range []struct{ key, want string }{{"key-of-a", "a"}, {"key-of-b", "b"}} {
			r := httptest.NewRequest("GET", "/", nil)
			r.Header.Set("apikey", tt.key)
			res, err := snap.Chain.Evaluate(context.Background(), r, "", nil)
			if err != nil || res.Consumer != tt.want {
				t.Errorf("key %s: got %v, %v; want consumer %q", tt.key, res, err, tt.want)
			}
		}
	})

	t.Run("missing", func(t *testing.T) {
		opts := testOptions(map[string]string{"WHO": "TOPSECRET"}, nil)
		err := Validate(path, opts)
		want := []string{
			`p.json:4:58: $.consumers[0].idps[0].key: environment variable A_KEY is not set`,
			`p.json:5:58: $.consumers[1].idps[0].key: cannot read secret file /run/b-key: file does not exist`,
		}
		if got := errorLines(t, err); !reflect.DeepEqual(got, want) {
			t.Errorf("got:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
		}
		if strings.Contains(err.Error(), "TOPSECRET") {
			t.Errorf("error reveals a secret: %v", err)
		}
	})
}

func TestExpandEnv(t *testing.T) {
	env := func(k string) (string, bool) {
		if k == "TOKEN" {
			return "s3cret", true
		}
		return "", false
	}
	tests := []struct {
		name, in, want, problem string
	}{
		{"none", "plain", "plain", ""},
		{"env", "Bearer ${env:TOKEN}", "Bearer s3cret", ""},
		{"escaped", "$${env:TOKEN}", "${env:TOKEN}", ""},
		{"unset", "${env:NOPE}", "", "environment variable NOPE is not set"},
		{"a file is not an input here", "${file:/etc/x}", "", "unknown reference ${file:/etc/x}: want ${env:NAME}"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, problems := ExpandEnv(tt.in, env)
			if tt.problem != "" {
				if len(problems) != 1 || problems[0] != tt.problem {
					t.Fatalf("got problems %q, want [%q]", problems, tt.problem)
				}
				return
			}
			if len(problems) != 0 || got != tt.want {
				t.Errorf("got %q %q, want %q", got, problems, tt.want)
			}
		})
	}
}
