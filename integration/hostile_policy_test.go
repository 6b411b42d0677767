package integration

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// stopWithin sends SIGTERM and fails the test when the process has not exited within bound.
func (g *gatewayProc) stopWithin(bound time.Duration) {
	g.t.Helper()
	if err := g.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		g.t.Fatalf("sending SIGTERM: %v", err)
	}
	select {
	case <-g.exited:
	case <-time.After(bound):
		g.t.Errorf("portcullis did not exit within %v of SIGTERM\nstderr:\n%s", bound, g.stderr)
		_ = g.cmd.Process.Kill()
		<-g.exited
	}
}

// unblockFIFO opens path for writing without blocking, which releases a reader stuck on it
// (the bug) so that the test's cleanup can end.
func unblockFIFO(path string) {
	if f, err := os.OpenFile(path, os.O_WRONLY|syscall.O_NONBLOCK, 0); err == nil {
		f.Close()
	}
}

// TestReloadToHostilePolicy: replacing the policy with something that used to hang the reload
// (a FIFO), fill memory (100 000 nested "[") or panic (a gorilla/mux capture group) and
// sending SIGHUP fails that reload, keeps the old policy serving, leaves the process alive, and
// SIGTERM still ends it at once.
func TestReloadToHostilePolicy(t *testing.T) {
	tests := []struct {
		name string
		// replace swaps the policy at path for the hostile one.
		replace func(t *testing.T, path, upstream string)
		want    string // in last_reload_error; "" for any
	}{
		{
			name: "a FIFO at the policy path",
			replace: func(t *testing.T, path, _ string) {
				if err := os.Remove(path); err != nil {
					t.Fatal(err)
				}
				if err := syscall.Mkfifo(path, 0o600); err != nil {
					t.Skipf("mkfifo: %v", err)
				}
				t.Cleanup(func() { unblockFIFO(path) })
			},
			want: "not a regular file: it is a named pipe (FIFO)",
		},
		{
			name: "a FIFO as a secret file",
			replace: func(t *testing.T, path, upstream string) {
				fifo := filepath.Join(filepath.Dir(path), "key")
				if err := syscall.Mkfifo(fifo, 0o600); err != nil {
					t.Skipf("mkfifo: %v", err)
				}
				t.Cleanup(func() { unblockFIFO(fifo) })
				writeFileAtomically(t, path, petstorePolicy(upstream, `,
    { "username": "Newcomer", "idps": [ { "idp": "keys", "key": "${file:`+fifo+`}" } ] }`))
			},
			want: "cannot read secret file",
		},
		{
			name: "100 000 nested arrays",
			replace: func(t *testing.T, path, _ string) {
				writeFileAtomically(t, path, strings.Repeat("[", 100000))
			},
			want: "nesting deeper than 64 levels",
		},
		{
			name: "a path template with a capture group",
			replace: func(t *testing.T, path, upstream string) {
				writeFileAtomically(t, path, strings.Replace(petstorePolicy(upstream, ""), `"/petstore/{rest:.*}"`, `"/petstore/{id:(cats|dogs)}"`, 1))
			},
			want: `$.routes[0].paths[1]: invalid path template "/petstore/{id:(cats|dogs)}": the pattern of {id} has a capture group, which is not allowed: write (?:...) instead of (...)`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			up := newUpstream(t, nil)
			gw := startGatewayArgs(t, petstorePolicy(up.URL, ""), []string{"-watch=false"})
			v1 := gw.status()["version"]
			bot := map[string]string{"apikey": "bot-key"}

			tt.replace(t, gw.PolicyPath, up.URL)
			gw.reloadSignal()
			st := gw.waitStatus("the reload to fail", func(st map[string]any) bool { return st["last_reload_error"] != nil })
			if msg, _ := st["last_reload_error"].(string); !strings.Contains(msg, tt.want) {
				t.Errorf("last_reload_error: got %q, want it to contain %q", msg, tt.want)
			}
			if st["version"] != v1 {
				t.Errorf("version: got %v, want the old %v", st["version"], v1)
			}
			// A second reload is handled too (the first did not hold the loop).
			reloads := st["reloads"]
			gw.reloadSignal()
			gw.waitStatus("the second reload", func(st map[string]any) bool { return st["reloads"] != reloads })
			if r := do(t, "GET", gw.URL+"/petstore", bot); r.Status != 200 {
				t.Errorf("the old policy should still serve: got %d %q", r.Status, r.Body)
			}
			gw.stopWithin(20 * time.Second)
		})
	}
}

// TestPolicyWithoutRoutesWarns: a policy without routes answers every request 404; validate,
// start and reload say so, without failing.
func TestPolicyWithoutRoutesWarns(t *testing.T) {
	const empty = `{ "listen": "127.0.0.1:0", "admin_listen": "127.0.0.1:0" }`
	t.Run("validate", func(t *testing.T) {
		stdout, stderr, code := runCLI(t, "", "validate", "-c", writeTemp(t, "empty.json", empty))
		if code != 0 {
			t.Fatalf("exit code: got %d, want 0 (a warning)\nstderr: %s", code, stderr)
		}
		if !strings.Contains(stderr, "warning: ") || !strings.Contains(stderr, "the policy has no routes: every request is answered 404") {
			t.Errorf("stderr lacks the warning:\n%s", stderr)
		}
		if !strings.Contains(stdout, "ok, 1 warning(s)") {
			t.Errorf("stdout: got %q, want it to count the warning", stdout)
		}
	})
	t.Run("start", func(t *testing.T) {
		gw := startGateway(t, empty)
		if r := do(t, "GET", gw.URL+"/anything", nil); r.Status != 404 {
			t.Errorf("got %d, want 404", r.Status)
		}
		if !strings.Contains(gw.stderr.String(), `"msg":"policy warning"`) {
			t.Errorf("start-up log lacks the warning:\n%s", gw.stderr)
		}
	})
	t.Run("reload", func(t *testing.T) {
		up := newUpstream(t, nil)
		gw := startGatewayArgs(t, petstorePolicy(up.URL, ""), []string{"-watch=false"})
		v1 := gw.status()["version"]
		if strings.Contains(gw.stderr.String(), "policy warning") {
			t.Fatalf("a policy with routes warned:\n%s", gw.stderr)
		}
		writeFileAtomically(t, gw.PolicyPath, empty)
		gw.reloadSignal()
		gw.waitStatus("the new version", func(st map[string]any) bool { return st["version"] != v1 })
		// Logged just after the swap that /status shows.
		gw.waitStatus("the warning in the log", func(map[string]any) bool {
			return strings.Contains(gw.stderr.String(), `"msg":"policy warning"`) && strings.Contains(gw.stderr.String(), "no routes")
		})
	})
}
