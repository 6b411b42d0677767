package main

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestPromote(t *testing.T) {
	good, err := os.ReadFile(filepath.Join("..", "..", "examples", "petstore.json"))
	if err != nil {
		t.Fatal(err)
	}
	const served = `{ "listen": "127.0.0.1:0", "routes": [] }`
	tests := []struct {
		name       string
		candidate  string // written to candidate.json
		args       func(policy, candidate string) []string
		wantCode   int
		wantPolicy string // the policy file's content afterwards
		wantStderr string
	}{
		{name: "a valid candidate replaces the policy", candidate: string(good),
			args: func(p, c string) []string { return []string{"-c", p, c} }, wantPolicy: string(good)},
		{name: "a broken candidate leaves it", candidate: `{ "consumers": [ { "username": 42 } ] `,
			args: func(p, c string) []string { return []string{"-c", p, c} }, wantCode: 1, wantPolicy: served, wantStderr: "is unchanged"},
		{name: "the policy itself", candidate: string(good),
			args: func(p, c string) []string { return []string{"-c", p, p} }, wantCode: 1, wantPolicy: served, wantStderr: "is the served policy itself"},
		{name: "a folder policy", candidate: string(good),
			args: func(p, c string) []string { return []string{"-c", filepath.Dir(p), c} }, wantCode: 1, wantPolicy: served, wantStderr: "is not a file"},
		{name: "no -c", candidate: string(good),
			args: func(p, c string) []string { return []string{c} }, wantCode: 2, wantPolicy: served, wantStderr: "missing -c FILE"},
		{name: "no candidate", candidate: string(good),
			args: func(p, c string) []string { return []string{"-c", p} }, wantCode: 2, wantPolicy: served, wantStderr: "usage: portcullis promote"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			policy := filepath.Join(dir, "policy.json")
			if err := os.WriteFile(policy, []byte(served), 0o640); err != nil {
				t.Fatal(err)
			}
			candidate := filepath.Join(t.TempDir(), "candidate.json")
			if err := os.WriteFile(candidate, []byte(tt.candidate), 0o600); err != nil {
				t.Fatal(err)
			}
			var stdout, stderr bytes.Buffer
			err := cmdPromote(tt.args(policy, candidate), &stdout, &stderr)
			code := 0
			var ee exitError
			switch {
			case errors.As(err, &ee):
				code = int(ee)
			case err != nil:
				code = 1
				stderr.WriteString(err.Error())
			}
			if code != tt.wantCode {
				t.Fatalf("got exit %d (%v), want %d\nstdout: %s\nstderr: %s", code, err, tt.wantCode, &stdout, &stderr)
			}
			if !strings.Contains(stderr.String(), tt.wantStderr) {
				t.Errorf("stderr lacks %q:\n%s", tt.wantStderr, &stderr)
			}
			b, _ := os.ReadFile(policy)
			if string(b) != tt.wantPolicy {
				t.Errorf("policy file: got %.60q, want %.60q", b, tt.wantPolicy)
			}
			fi, _ := os.Stat(policy)
			if got, want := fi.Mode().Perm(), os.FileMode(0o640); got != want {
				t.Errorf("policy file mode: got %v, want %v (kept)", got, want)
			}
			entries, _ := os.ReadDir(dir)
			if len(entries) != 1 {
				t.Errorf("the policy's folder holds %d entries, want 1 (no temporary file left)", len(entries))
			}
		})
	}
}
