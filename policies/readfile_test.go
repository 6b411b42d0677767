package policies

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// mkfifo makes a FIFO at path; opening it for reading blocks until a writer comes. Cleanup
// opens it for writing, so that a reader stuck on it (the bug) is released.
func mkfifo(t *testing.T, path string) {
	t.Helper()
	if err := syscall.Mkfifo(path, 0o600); err != nil {
		t.Skipf("mkfifo: %v", err)
	}
	t.Cleanup(func() {
		if f, err := os.OpenFile(path, os.O_WRONLY|syscall.O_NONBLOCK, 0); err == nil {
			f.Close()
		}
	})
}

// validateBounded runs Validate and fails the test when it does not return (a blocking read).
func validateBounded(t *testing.T, path string, opts Options) error {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- Validate(path, opts) }()
	select {
	case err := <-done:
		return err
	case <-time.After(10 * time.Second):
		t.Fatalf("Validate(%s) still blocked after 10s", path)
		return nil
	}
}

const smallPolicy = `{
  "idps": [ { "name": "keys", "type": "key-auth" } ],
  "consumers": [ { "username": "a", "idps": [ { "idp": "keys", "key": "${file:SECRET}" } ] } ],
  "routes": [ { "name": "r", "paths": ["/r"], "upstream": { "targets": [ { "url": "http://127.0.0.1:1" } ] } } ]
}`

// TestSpecialFiles: only regular files are read, with a size cap, so that no path can block a
// load or fill memory: a FIFO, a device or an oversized file is an error at once.
func TestSpecialFiles(t *testing.T) {
	good := func(dir string) string {
		p := filepath.Join(dir, "secret")
		if err := os.WriteFile(p, []byte("k1\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		return strings.Replace(smallPolicy, "SECRET", p, 1)
	}
	tests := []struct {
		name  string
		setup func(t *testing.T, dir string) string // returns the path to load
		opts  Options
		want  string // a part of the only error; "" for none
	}{
		{
			name: "a regular file loads",
			setup: func(t *testing.T, dir string) string {
				p := filepath.Join(dir, "p.json")
				os.WriteFile(p, []byte(good(dir)), 0o600)
				return p
			},
		},
		{
			name: "FIFO as the policy",
			setup: func(t *testing.T, dir string) string {
				p := filepath.Join(dir, "p.json")
				mkfifo(t, p)
				return p
			},
			want: "p.json: cannot read policy: not a regular file: it is a named pipe (FIFO)",
		},
		{
			name: "FIFO in a policy folder",
			setup: func(t *testing.T, dir string) string {
				os.WriteFile(filepath.Join(dir, "a.json"), []byte(good(dir)), 0o600)
				mkfifo(t, filepath.Join(dir, "b.json"))
				return dir
			},
			want: "b.json: cannot read policy: not a regular file: it is a named pipe (FIFO)",
		},
		{
			name:  "a device",
			setup: func(t *testing.T, dir string) string { return "/dev/zero" },
			want:  "/dev/zero: cannot read policy: not a regular file: it is a device",
		},
		{
			name: "a file above the cap",
			setup: func(t *testing.T, dir string) string {
				p := filepath.Join(dir, "p.json")
				os.WriteFile(p, []byte(good(dir)+strings.Repeat(" ", 4096)), 0o600)
				return p
			},
			opts: Options{MaxFileSize: 4096},
			want: "p.json: cannot read policy: file too large: ",
		},
		{
			name: "a folder's file above the cap",
			setup: func(t *testing.T, dir string) string {
				os.WriteFile(filepath.Join(dir, "a.json"), []byte(good(dir)), 0o600)
				os.WriteFile(filepath.Join(dir, "b.json"), []byte("{}"+strings.Repeat(" ", 2048)), 0o600)
				return dir
			},
			opts: Options{MaxFileSize: 1024},
			want: "b.json: cannot read policy: file too large: 2050 bytes, the limit is 1 KiB",
		},
		{
			name: "FIFO as a secret file",
			setup: func(t *testing.T, dir string) string {
				s := filepath.Join(dir, "secret")
				mkfifo(t, s)
				p := filepath.Join(dir, "p.json")
				os.WriteFile(p, []byte(strings.Replace(smallPolicy, "SECRET", s, 1)), 0o600)
				return p
			},
			want: "cannot read secret file " + "DIR/secret: not a regular file: it is a named pipe (FIFO)",
		},
		{
			name: "a secret file above 1 MiB",
			setup: func(t *testing.T, dir string) string {
				s := filepath.Join(dir, "secret")
				os.WriteFile(s, make([]byte, MaxSecretFileSize+1), 0o600)
				p := filepath.Join(dir, "p.json")
				os.WriteFile(p, []byte(strings.Replace(smallPolicy, "SECRET", s, 1)), 0o600)
				return p
			},
			want: "DIR/secret: file too large: 1048577 bytes, the limit is 1 MiB",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			path := tt.setup(t, dir)
			err := validateBounded(t, path, tt.opts)
			if tt.want == "" {
				if err != nil {
					t.Fatalf("got %v, want no error", err)
				}
				return
			}
			errs := Errors(err)
			want := strings.ReplaceAll(tt.want, "DIR", dir)
			if len(errs) != 1 || !strings.Contains(errs[0].Error(), want) {
				t.Fatalf("got %v, want one error containing %q", err, want)
			}
		})
	}
}

func TestReadRegular(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, "fifo")
	mkfifo(t, fifo)
	if _, err := readRegular(fifo, 10); !errors.Is(err, errNotRegular) {
		t.Errorf("FIFO: got %v, want errNotRegular", err)
	}
	big := filepath.Join(dir, "big")
	os.WriteFile(big, []byte("0123456789a"), 0o600)
	if _, err := readRegular(big, 10); !errors.Is(err, errTooLarge) {
		t.Errorf("11 bytes, limit 10: got %v, want errTooLarge", err)
	}
	if got, err := readRegular(big, 11); err != nil || string(got) != "0123456789a" {
		t.Errorf("11 bytes, limit 11: got %q, %v", got, err)
	}
}

// TestDefaultMaxFileSize: the cap leaves room for the largest policy measured, a million
// consumers in 130 MB (bench/scale.go), with consumers that carry longer credentials.
func TestDefaultMaxFileSize(t *testing.T) {
	if DefaultMaxFileSize < 3*130<<20 {
		t.Errorf("DefaultMaxFileSize %d is less than three times the million-consumer policy", DefaultMaxFileSize)
	}
}

// TestReadRegularAllocatesOnce: a large policy is read into one buffer of its size, as
// os.ReadFile does, not grown by doubling (twice the start-up peak for a large policy).
func TestReadRegularAllocatesOnce(t *testing.T) {
	const size = 8 << 20
	path := filepath.Join(t.TempDir(), "big.json")
	if err := os.WriteFile(path, make([]byte, size), 0o600); err != nil {
		t.Fatal(err)
	}
	var err error
	n := allocated(func() { _, err = readRegular(path, DefaultMaxFileSize) })
	if err != nil {
		t.Fatal(err)
	}
	if n > size+size/4 {
		t.Errorf("reading %d bytes allocated %d, want about one buffer of the file's size", size, n)
	}
}
