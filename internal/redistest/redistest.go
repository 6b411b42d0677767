// Package redistest runs a real redis-server for tests: a throwaway instance on a free
// loopback port, without persistence, stopped when the test ends.
package redistest

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"
)

// startTimeout bounds how long a starting redis-server may take to answer PING.
const startTimeout = 10 * time.Second

// Server is one redis-server process. Its methods are safe for concurrent use.
type Server struct {
	// Addr is the server's host:port; it stays the same across Restart.
	Addr string

	t    testing.TB
	bin  string
	port int
	dir  string
	args []string // added to the command line (cluster mode)

	mu     sync.Mutex
	cmd    *exec.Cmd
	exited chan struct{}
	output *lockedBuffer
}

// Start starts a redis-server from PATH and registers its stop with t.Cleanup. Without
// redis-server the test is skipped, or fails when the environment variable CI is "true"
// (CI must not silently skip the Redis tests).
func Start(t testing.TB) *Server {
	t.Helper()
	return startWith(t, lookPath(t), nil)
}

// lookPath finds redis-server, or skips the test (fails it under CI) without one.
func lookPath(t testing.TB) string {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		msg := "redis-server not found on PATH (apt-get install redis-server): " + err.Error()
		if os.Getenv("CI") == "true" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	return bin
}

// startWith starts a server whose command line ends with the arguments extra returns for its
// port (nil: none).
func startWith(t testing.TB, bin string, extra func(port int) ([]string, error)) *Server {
	t.Helper()
	s := &Server{t: t, bin: bin, dir: t.TempDir()}
	// Another process may take the free port between our probe and redis-server's bind.
	for attempt := 0; ; attempt++ {
		var err error
		s.port, err = freePort()
		if err != nil {
			t.Fatalf("finding a free port: %v", err)
		}
		if extra != nil {
			if s.args, err = extra(s.port); err != nil {
				t.Fatalf("finding a free port: %v", err)
			}
		}
		s.Addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port))
		if err = s.start(); err == nil {
			break
		}
		if attempt == 2 {
			t.Fatalf("starting redis-server: %v", err)
		}
	}
	t.Cleanup(s.Stop)
	return s
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// start launches redis-server on s.port and waits until it answers PING.
func (s *Server) start() error {
	args := append([]string{
		"--port", strconv.Itoa(s.port),
		"--bind", "127.0.0.1",
		"--save", "",
		"--appendonly", "no",
		"--dir", s.dir,
		"--daemonize", "no",
		"--loglevel", "warning",
	}, s.args...)
	cmd := exec.Command(s.bin, args...)
	out := &lockedBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("running %s: %w", s.bin, err)
	}
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(exited)
	}()
	deadline := time.Now().Add(startTimeout)
	for {
		if err := Ping(s.Addr); err == nil {
			break
		}
		select {
		case <-exited:
			return fmt.Errorf("redis-server exited during start: %s", out.String())
		case <-time.After(20 * time.Millisecond): // readiness poll interval
		}
		if time.Now().After(deadline) {
			_ = cmd.Process.Kill()
			<-exited
			return fmt.Errorf("redis-server not answering PING on %s after %s: %s", s.Addr, startTimeout, out.String())
		}
	}
	s.mu.Lock()
	s.cmd, s.exited, s.output = cmd, exited, out
	s.mu.Unlock()
	return nil
}

// Ping sends one PING to the Redis at addr and expects +PONG: the readiness check of the
// servers the tests and the benchmark start.
func Ping(addr string) error {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(time.Second))
	if _, err := c.Write([]byte("PING\r\n")); err != nil {
		return err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return err
	}
	if line != "+PONG\r\n" {
		return fmt.Errorf("unexpected PING reply %q", line)
	}
	return nil
}

// Stop stops the server (SIGTERM, then SIGKILL if it lingers) and waits for it to exit.
// Stopping a stopped server does nothing.
func (s *Server) Stop() {
	s.mu.Lock()
	cmd, exited := s.cmd, s.exited
	s.cmd = nil
	s.mu.Unlock()
	if cmd == nil {
		return
	}
	// A paused server ignores SIGTERM until continued.
	_ = cmd.Process.Signal(syscall.SIGCONT)
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-exited:
	case <-time.After(5 * time.Second):
		_ = cmd.Process.Kill()
		<-exited
	}
}

// Restart stops the server and starts a fresh, empty one on the same address.
func (s *Server) Restart() {
	s.t.Helper()
	s.Stop()
	var err error
	// The old process's port may take a moment to be bindable again.
	for attempt := 0; attempt < 3; attempt++ {
		if err = s.start(); err == nil {
			return
		}
	}
	s.t.Fatalf("restarting redis-server on %s: %v", s.Addr, err)
}

// Pause freezes the server (SIGSTOP): connections stay open but nothing answers, as with a
// hung Redis. Resume continues it.
func (s *Server) Pause() { s.signal(syscall.SIGSTOP) }

// Resume continues a paused server.
func (s *Server) Resume() { s.signal(syscall.SIGCONT) }

func (s *Server) signal(sig os.Signal) {
	s.t.Helper()
	s.mu.Lock()
	cmd := s.cmd
	s.mu.Unlock()
	if cmd == nil {
		s.t.Fatalf("signalling redis-server on %s: not running", s.Addr)
	}
	if err := cmd.Process.Signal(sig); err != nil && !errors.Is(err, os.ErrProcessDone) {
		s.t.Fatalf("signalling redis-server on %s: %v", s.Addr, err)
	}
}

// Output is what the server printed so far (for failure messages).
func (s *Server) Output() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.output == nil {
		return ""
	}
	return s.output.String()
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
