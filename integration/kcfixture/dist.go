package kcfixture

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// distServer is a private copy of the Keycloak distribution run by kc.sh.
type distServer struct {
	k        *Keycloak
	home     string // the private copy; removed by close
	javaHome string
	httpPort int
	mgmtPort int
	url      string

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{} // closed when cmd has exited
}

// InstallDir is where scripts/fetch-keycloak.sh installs the distribution.
func InstallDir() string {
	cache := os.Getenv("PORTCULLIS_CACHE")
	if cache == "" {
		home, err := os.UserHomeDir()
		if err != nil {
			home = os.TempDir()
		}
		cache = filepath.Join(home, ".cache", "portcullis")
	}
	return filepath.Join(cache, "keycloak-"+Version)
}

// startDistribution runs the distribution, installing it first when it is absent. It returns an
// error wrapping ErrNoKeycloak when this machine cannot run it at all (no Java, no Maven).
func startDistribution(ctx context.Context, k *Keycloak, realms string) (*distServer, string, error) {
	javaHome, err := pickJava()
	if err != nil {
		return nil, "", err
	}
	install, err := ensureInstalled(ctx, k)
	if err != nil {
		return nil, "", err
	}

	home, err := os.MkdirTemp("", "portcullis-keycloak-")
	if err != nil {
		return nil, "", fmt.Errorf("creating the Keycloak run folder: %w", err)
	}
	// A private copy gives each test binary a fresh database and keeps parallel test binaries
	// from sharing Quarkus' build files.
	if out, err := exec.CommandContext(ctx, "cp", "-a", install+"/.", home).CombinedOutput(); err != nil {
		os.RemoveAll(home)
		return nil, "", fmt.Errorf("copying %s: %w: %s", install, err, out)
	}
	if err := copyRealms(realms, filepath.Join(home, "data", "import")); err != nil {
		os.RemoveAll(home)
		return nil, "", err
	}
	ports, err := freePorts(2)
	if err != nil {
		os.RemoveAll(home)
		return nil, "", err
	}
	s := &distServer{k: k, home: home, javaHome: javaHome, httpPort: ports[0], mgmtPort: ports[1]}
	s.url = "http://127.0.0.1:" + strconv.Itoa(s.httpPort)
	start := time.Now()
	if err := s.start(ctx); err != nil {
		os.RemoveAll(home)
		return nil, "", err
	}
	k.logger.Info("keycloak distribution ready", "url", s.url, "java", javaHome, "startup", time.Since(start).Round(time.Millisecond))
	return s, s.url, nil
}

// ensureInstalled returns the installation, running scripts/fetch-keycloak.sh when it is absent.
func ensureInstalled(ctx context.Context, k *Keycloak) (string, error) {
	dir := InstallDir()
	if _, err := os.Stat(filepath.Join(dir, ".portcullis-ready")); err == nil {
		return dir, nil
	}
	if _, err := exec.LookPath("mvn"); err != nil {
		return "", fmt.Errorf("%w: the distribution is not installed in %s and mvn is missing", ErrNoKeycloak, dir)
	}
	root, err := repoRoot()
	if err != nil {
		return "", err
	}
	k.logger.Info("installing the keycloak distribution (scripts/fetch-keycloak.sh)", "dir", dir)
	cmd := exec.CommandContext(ctx, "bash", filepath.Join(root, "scripts", "fetch-keycloak.sh"))
	cmd.Env = append(os.Environ(), "KEYCLOAK_VERSION="+Version)
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("running scripts/fetch-keycloak.sh: %w", err)
	}
	got := strings.TrimSpace(string(out))
	if i := strings.LastIndexByte(got, '\n'); i >= 0 {
		got = got[i+1:]
	}
	if _, err := os.Stat(filepath.Join(got, ".portcullis-ready")); err != nil {
		return "", fmt.Errorf("scripts/fetch-keycloak.sh printed %q, not an installation: %w", got, err)
	}
	return got, nil
}

// pickJava finds a JAVA_HOME for Keycloak 26: KC_JAVA_HOME if set, else a JDK 21, then 17, from
// /usr/lib/jvm (Keycloak 26.5 is built for 17 and recommends 21), else JAVA_HOME, else the java
// on PATH ("" then).
func pickJava() (string, error) {
	if h := os.Getenv("KC_JAVA_HOME"); h != "" {
		return h, nil
	}
	homes, _ := filepath.Glob("/usr/lib/jvm/*")
	for _, want := range []string{"21", "17"} {
		for _, h := range homes {
			if javaMajor(h) == want {
				return h, nil
			}
		}
	}
	if h := os.Getenv("JAVA_HOME"); h != "" {
		return h, nil
	}
	if _, err := exec.LookPath("java"); err == nil {
		return "", nil
	}
	return "", fmt.Errorf("%w: no Java found (need JDK 17 or 21)", ErrNoKeycloak)
}

// javaMajor reads a JDK's major version from its release file, without starting a JVM.
func javaMajor(home string) string {
	if _, err := os.Stat(filepath.Join(home, "bin", "java")); err != nil {
		return ""
	}
	f, err := os.Open(filepath.Join(home, "release"))
	if err != nil {
		return ""
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		v, ok := strings.CutPrefix(sc.Text(), "JAVA_VERSION=")
		if !ok {
			continue
		}
		v = strings.Trim(v, `"`)
		major, _, _ := strings.Cut(v, ".")
		return major
	}
	return ""
}

func copyRealms(from, to string) error {
	if err := os.MkdirAll(to, 0o755); err != nil {
		return fmt.Errorf("creating the import folder: %w", err)
	}
	files, err := filepath.Glob(filepath.Join(from, "*-realm.json"))
	if err != nil || len(files) == 0 {
		return fmt.Errorf("finding realm exports in %s: %w", from, errors.Join(err, errors.New("none found")))
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return fmt.Errorf("copying realm export: %w", err)
		}
		if err := os.WriteFile(filepath.Join(to, filepath.Base(f)), b, 0o644); err != nil {
			return fmt.Errorf("copying realm export: %w", err)
		}
	}
	return nil
}

func freePorts(n int) ([]int, error) {
	ports := make([]int, 0, n)
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("finding a free port: %w", err)
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

func (s *distServer) logPath() string { return filepath.Join(s.home, "keycloak.log") }

// start runs kc.sh start-dev in its own process group and waits until both realms answer.
func (s *distServer) start(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd != nil {
		return errors.New("keycloak is already running")
	}
	logf, err := os.OpenFile(s.logPath(), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("opening the Keycloak log: %w", err)
	}
	cmd := exec.Command(filepath.Join(s.home, "bin", "kc.sh"), "start-dev",
		"--http-host=127.0.0.1",
		"--http-port="+strconv.Itoa(s.httpPort),
		"--http-management-port="+strconv.Itoa(s.mgmtPort),
		// A fixed hostname keeps the issuer identical whatever Host a client uses.
		"--hostname="+s.url,
		"--import-realm",
	)
	cmd.Dir = s.home
	cmd.Env = append(os.Environ(),
		"KC_BOOTSTRAP_ADMIN_USERNAME="+s.k.AdminUser,
		"KC_BOOTSTRAP_ADMIN_PASSWORD="+s.k.AdminPassword,
	)
	if s.javaHome != "" {
		cmd.Env = append(cmd.Env, "JAVA_HOME="+s.javaHome)
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	// Its own process group so that stop reaches kc.sh and its JVM; Pdeathsig so that a test
	// binary that dies without Stop does not leave Keycloak running.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("starting kc.sh: %w", err)
	}
	done := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		logf.Close()
		close(done)
	}()
	s.cmd, s.done = cmd, done

	if err := s.waitReady(ctx, done); err != nil {
		s.killLocked(10 * time.Second)
		return fmt.Errorf("waiting for Keycloak at %s: %w\n%s", s.url, err, s.logTail(40))
	}
	return nil
}

// waitReady polls the realms' discovery documents until both answer, the process exits or ctx ends.
func (s *distServer) waitReady(ctx context.Context, exited <-chan struct{}) error {
	return waitRealms(ctx, s.k.client, s.url, exited)
}

// waitRealms polls the discovery documents of the test realms at base until they answer.
func waitRealms(ctx context.Context, client *http.Client, base string, exited <-chan struct{}) error {
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	for {
		ready := true
		for _, realm := range []string{RealmCorp, RealmPartners} {
			req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/realms/"+realm+"/.well-known/openid-configuration", nil)
			if err != nil {
				return err
			}
			resp, err := client.Do(req)
			if err != nil {
				ready = false
				break
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				ready = false
				break
			}
		}
		if ready {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-exited:
			return errors.New("kc.sh exited")
		case <-tick.C:
		}
	}
}

func (s *distServer) logTail(n int) string {
	b, err := os.ReadFile(s.logPath())
	if err != nil {
		return ""
	}
	lines := bytes.Split(bytes.TrimRight(b, "\n"), []byte("\n"))
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return string(bytes.Join(lines, []byte("\n")))
}

// stop ends the process group gracefully (SIGTERM), then by SIGKILL after a grace period.
func (s *distServer) stop(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	grace := 30 * time.Second
	if dl, ok := ctx.Deadline(); ok && time.Until(dl) < grace {
		grace = time.Until(dl)
	}
	return s.killLocked(grace)
}

func (s *distServer) killLocked(grace time.Duration) error {
	if s.cmd == nil {
		return nil
	}
	pgid := s.cmd.Process.Pid
	_ = syscall.Kill(-pgid, syscall.SIGTERM)
	select {
	case <-s.done:
	case <-time.After(grace):
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
		<-s.done
	}
	// kc.sh may exit before its JVM; make sure nothing of the group survives.
	_ = syscall.Kill(-pgid, syscall.SIGKILL)
	s.cmd, s.done = nil, nil
	return nil
}

func (s *distServer) close(ctx context.Context) error {
	err := s.stop(ctx)
	if rmErr := os.RemoveAll(s.home); rmErr != nil {
		err = errors.Join(err, fmt.Errorf("removing %s: %w", s.home, rmErr))
	}
	return err
}
