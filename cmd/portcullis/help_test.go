package main

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func TestHelpAndUsage(t *testing.T) {
	petstore := filepath.Join("..", "..", "examples", "petstore.json")
	tests := []struct {
		name       string
		args       []string
		wantCode   int
		wantStdout []string
		wantStderr []string
	}{
		{name: "main -h", args: []string{"-h"}, wantStdout: []string{"Commands:", "Exit codes:", "Examples:", "hash-password"}},
		{name: "help explain", args: []string{"help", "explain"}, wantStdout: []string{"Usage:", "-remote-addr HOST:PORT", "(default 127.0.0.1:40000)"}},
		{name: "help test", args: []string{"help", "test"}, wantStdout: []string{"-format FORMAT", "(default text)", "issuer_key", "FILE..."}},
		{name: "main -h lists test", args: []string{"-h"}, wantStdout: []string{"check a policy's decisions against test files"}},
		{name: "hash-password -h does not read stdin", args: []string{"hash-password", "-h"}, wantStdout: []string{"Exit codes:"}},
		{name: "token -h", args: []string{"token", "--help"}, wantStdout: []string{"--key-claim CLAIM", "(default key)", "Examples:"}},
		{name: "no command", args: nil, wantCode: 2, wantStderr: []string{"usage: portcullis COMMAND"}},
		{name: "unknown command", args: []string{"nope"}, wantCode: 2, wantStderr: []string{`unknown command "nope"`}},
		{name: "unknown flag", args: []string{"run", "-nope"}, wantCode: 2, wantStderr: []string{"-nope", "usage: portcullis run"}},
		{name: "validate PATH", args: []string{"validate", petstore}, wantStdout: []string{"petstore.json: ok"}},
		{name: "validate -c PATH", args: []string{"validate", "-c", petstore}, wantStdout: []string{"petstore.json: ok"}},
		{name: "validate both", args: []string{"validate", "-c", petstore, petstore}, wantCode: 2, wantStderr: []string{"unexpected argument"}},
		{name: "short HS256 secret warned", args: []string{"token", "--key", "k", "--secret", "short"},
			wantStderr: []string{"warning: the --secret is 5 bytes; RFC 7518 §3.2 wants at least 32 for HS256"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			err := run(context.Background(), tt.args, strings.NewReader(""), &stdout, &stderr)
			code := 0
			var ee exitError
			switch {
			case errors.As(err, &ee):
				code = int(ee)
			case err != nil:
				code = 1
			}
			if code != tt.wantCode {
				t.Fatalf("got exit %d (%v), want %d\nstdout: %s\nstderr: %s", code, err, tt.wantCode, &stdout, &stderr)
			}
			for _, w := range tt.wantStdout {
				if !strings.Contains(stdout.String(), w) {
					t.Errorf("stdout lacks %q:\n%s", w, &stdout)
				}
			}
			for _, w := range tt.wantStderr {
				if !strings.Contains(stderr.String(), w) {
					t.Errorf("stderr lacks %q:\n%s", w, &stderr)
				}
			}
		})
	}
}

func TestTokenEndsWithNewline(t *testing.T) {
	var stdout, stderr bytes.Buffer
	if err := cmdToken([]string{"--key", "k", "--secret", strings.Repeat("s", 32)}, &stdout, &stderr); err != nil {
		t.Fatal(err)
	}
	if !strings.HasSuffix(stdout.String(), "\n") || strings.Count(stdout.String(), "\n") != 1 {
		t.Errorf("got %q, want one line ending in a newline", stdout.String())
	}
	if stderr.Len() != 0 {
		t.Errorf("got stderr %q for a 32-byte HS256 secret, want nothing", stderr.String())
	}
}

// TestSystemdUnit checks examples/systemd/portcullis.service with systemd-analyze verify, on a
// copy whose ExecStart names an executable that exists here (verify refuses a missing one).
func TestSystemdUnit(t *testing.T) {
	src := filepath.Join("..", "..", "examples", "systemd", "portcullis.service")
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	unit := string(b)
	for _, want := range []string{"DynamicUser=yes", "ProtectSystem=strict", "NoNewPrivileges=yes", "ProtectHome=yes",
		"PrivateTmp=yes", "\nCapabilityBoundingSet=\n", "RestrictAddressFamilies=", "SystemCallFilter=@system-service",
		"ExecReload=/bin/kill -HUP $MAINPID", "ExecStart=/usr/local/bin/portcullis run -c /etc/portcullis"} {
		if !strings.Contains(unit, want) {
			t.Errorf("unit lacks %q", want)
		}
	}
	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Skip("systemd-analyze is not installed (apt-get install systemd): the unit's syntax is not verified")
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "portcullis.service")
	if err := os.WriteFile(p, []byte(strings.ReplaceAll(unit, "/usr/local/bin/portcullis", self)), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(analyze, "verify", p).CombinedOutput()
	if err != nil || len(out) != 0 {
		t.Errorf("systemd-analyze verify: got %v, output %q; want success and no output", err, out)
	}
}
