package policies

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

// failAfter bounds every wait; it is a failure deadline, not a synchronisation.
const failAfter = 10 * time.Second

type event struct {
	name     string
	relevant bool
}

type watchProbe struct {
	changes chan struct{}
	events  chan event
}

func startWatcher(t *testing.T, path string) *watchProbe {
	return startWatcherWith(t, path, nil)
}

func startWatcherWith(t *testing.T, path string, timer debounceTimer) *watchProbe {
	t.Helper()
	p := &watchProbe{changes: make(chan struct{}, 16), events: make(chan event, 1024)}
	w, err := newWatcher(path, nil, func() { p.changes <- struct{}{} }, watchHooks{
		observe: func(name string, rel bool) {
			select {
			case p.events <- event{filepath.Base(name), rel}:
			default:
			}
		},
		timer: timer,
	})
	if err != nil {
		t.Fatalf("newWatcher: %v", err)
	}
	t.Cleanup(func() {
		if err := w.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return p
}

func (p *watchProbe) waitChange(t *testing.T) {
	t.Helper()
	select {
	case <-p.changes:
	case <-time.After(failAfter):
		t.Fatal("onChange was not called")
	}
}

// waitEvent waits until the watcher has judged an event of name, and returns its verdict.
func (p *watchProbe) waitEvent(t *testing.T, name string) bool {
	t.Helper()
	deadline := time.After(failAfter)
	for {
		select {
		case ev := <-p.events:
			if ev.name == name {
				return ev.relevant
			}
		case <-deadline:
			t.Fatalf("no event for %s", name)
		}
	}
}

func mustWrite(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestWatcherFile(t *testing.T) {
	tests := []struct {
		name   string
		change func(t *testing.T, dir, file string)
	}{
		{"write", func(t *testing.T, dir, file string) { mustWrite(t, file, `{"listen":"127.0.0.1:1"}`) }},
		{"rename-replace", func(t *testing.T, dir, file string) {
			tmp := filepath.Join(dir, ".policy.json.swp")
			mustWrite(t, tmp, `{"listen":"127.0.0.1:2"}`)
			if err := os.Rename(tmp, file); err != nil {
				t.Fatal(err)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			file := filepath.Join(dir, "policy.json")
			mustWrite(t, file, `{}`)
			p := startWatcher(t, file)
			tt.change(t, dir, file)
			p.waitChange(t)
		})
	}
}

func TestWatcherIgnoresUnrelatedFiles(t *testing.T) {
	t.Run("file", func(t *testing.T) {
		dir := t.TempDir()
		file := filepath.Join(dir, "policy.json")
		mustWrite(t, file, `{}`)
		p := startWatcher(t, file)
		for _, name := range []string{"other.json", "notes.txt"} {
			mustWrite(t, filepath.Join(dir, name), "x")
			if p.waitEvent(t, name) {
				t.Errorf("%s: judged relevant, want ignored", name)
			}
		}
		if len(p.changes) != 0 {
			t.Errorf("onChange called for unrelated files")
		}
		mustWrite(t, file, `{"listen":"127.0.0.1:1"}`)
		if !p.waitEvent(t, "policy.json") {
			t.Errorf("policy.json: judged irrelevant")
		}
		p.waitChange(t)
	})
	t.Run("folder", func(t *testing.T) {
		dir := t.TempDir()
		mustWrite(t, filepath.Join(dir, "a.json"), `{}`)
		p := startWatcher(t, dir)
		for _, tt := range []struct {
			name string
			want bool
		}{{"notes.txt", false}, {".hidden.json", false}, {"b.json", true}} {
			mustWrite(t, filepath.Join(dir, tt.name), "{}")
			if got := p.waitEvent(t, tt.name); got != tt.want {
				t.Errorf("%s: relevant %v, want %v", tt.name, got, tt.want)
			}
		}
		p.waitChange(t)
	})
}

// TestWatcherConfigMap replays how the kubelet updates a ConfigMap volume: the files are
// symlinks through ..data, which is swapped atomically to a new timestamped folder.
func TestWatcherConfigMap(t *testing.T) {
	for _, mode := range []string{"file", "folder"} {
		t.Run(mode, func(t *testing.T) {
			dir := t.TempDir()
			mkVersion := func(name, content string) {
				if err := os.Mkdir(filepath.Join(dir, name), 0o700); err != nil {
					t.Fatal(err)
				}
				mustWrite(t, filepath.Join(dir, name, "policy.json"), content)
			}
			mkVersion("..2025_01_01_00_00_00.1", `{}`)
			if err := os.Symlink("..2025_01_01_00_00_00.1", filepath.Join(dir, "..data")); err != nil {
				t.Fatal(err)
			}
			if err := os.Symlink("..data/policy.json", filepath.Join(dir, "policy.json")); err != nil {
				t.Fatal(err)
			}
			watched := dir
			if mode == "file" {
				watched = filepath.Join(dir, "policy.json")
			}
			p := startWatcher(t, watched)

			mkVersion("..2025_01_01_00_01_00.2", `{"listen":"127.0.0.1:1"}`)
			if err := os.Symlink("..2025_01_01_00_01_00.2", filepath.Join(dir, "..data_tmp")); err != nil {
				t.Fatal(err)
			}
			if err := os.Rename(filepath.Join(dir, "..data_tmp"), filepath.Join(dir, "..data")); err != nil {
				t.Fatal(err)
			}
			p.waitChange(t)

			// The swap is visible through the policy's path.
			data, err := os.ReadFile(filepath.Join(dir, "policy.json"))
			if err != nil || string(data) != `{"listen":"127.0.0.1:1"}` {
				t.Errorf("after swap: %q, %v", data, err)
			}
		})
	}
}

// manualTimer fires only when the test says so.
type manualTimer struct {
	c      chan time.Time
	resets chan struct{}
}

func (m *manualTimer) C() <-chan time.Time { return m.c }
func (m *manualTimer) Reset()              { m.resets <- struct{}{} }
func (m *manualTimer) Stop()               {}

func TestWatcherDebounces(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "policy.json")
	mustWrite(t, file, `{}`)
	timer := &manualTimer{c: make(chan time.Time), resets: make(chan struct{}, 1024)}
	p := startWatcherWith(t, file, timer)
	const writes = 5
	for i := 0; i < writes; i++ {
		mustWrite(t, file, `{"listen":"127.0.0.1:1"}`)
		if !p.waitEvent(t, "policy.json") {
			t.Fatal("policy.json judged irrelevant")
		}
	}
	// Every relevant event restarted the period, none called onChange by itself.
	if len(timer.resets) == 0 {
		t.Error("events did not restart the debounce timer")
	}
	if n := len(p.changes); n != 0 {
		t.Errorf("got %d onChange calls before the period ended, want 0", n)
	}
	select {
	case timer.c <- time.Now():
	case <-time.After(failAfter):
		t.Fatal("watcher did not wait on the debounce timer")
	}
	p.waitChange(t)
	// The loop handles the timer and calls onChange in one step; a second call could only
	// come from another timer delivery, which the test does not send.
	if n := len(p.changes); n != 0 {
		t.Errorf("got %d extra onChange calls, want 1 in all", n)
	}
}

func TestWatcherCloseIsIdempotent(t *testing.T) {
	dir := t.TempDir()
	w, err := NewWatcher(dir, nil, func() {})
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Errorf("first Close: %v", err)
	}
	if err := w.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

func TestWatcherMissingPath(t *testing.T) {
	if _, err := NewWatcher(filepath.Join(t.TempDir(), "nope.json"), nil, func() {}); err == nil {
		t.Error("got nil error for a missing path")
	}
}
