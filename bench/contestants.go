package main

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/lestrrat-go/jwx/v2/jwk"
	"github.com/lestrrat-go/jwx/v2/jwt"
	"golang.org/x/crypto/bcrypt"

	"github.com/portcullis/portcullis/internal/redistest"
)

// The credentials every contestant checks. They guard nothing but this benchmark.
const (
	benchKey      = "bench-key"
	basicUser     = "bench"
	basicPassword = "bench-password"
	hsSecret      = "bench-hs256-secret-0123456789abcdef"
	oidcAudience  = "portcullis"
	oidcSubject   = "bench-svc"
	benchPath     = "/bench"
	// limitCount never rejects during a run: the limiter's cost is measured, not its verdicts.
	limitCount = 1_000_000_000
)

// Loopback addresses. Clients reach the upstream directly on upstreamDirectIP and contestants
// reach it on upstreamProxyIP, so that the TIME_WAIT sockets of a proxy's upstream side can be
// told from those of the direct baseline legs.
var (
	loopback         = netip.MustParseAddr("127.0.0.1")
	upstreamDirectIP = loopback
	upstreamProxyIP  = netip.MustParseAddr("127.0.0.2")
)

// contestant is one server measured: it sits between the load generator and the upstream (or
// is the upstream, for "direct").
type contestant struct {
	name  string // short id, for -only
	title string // table label
	// optional contestants (Caddy, OIDC) are skipped with a note when they cannot start; the
	// others fail the run.
	optional bool

	url    string
	header http.Header
	// endpoints whose TIME_WAIT sockets are the contestant's: its listener and its side of the
	// upstream.
	endpoints []netip.AddrPort
	// proc is measured for CPU (with its children: nginx workers), and so is each of also (the
	// auth server nginx asks, on the same CPU: its work is the contestant's); aux are helpers
	// whose CPU is reported in a note (redis-server).
	proc *proc
	also []*proc
	aux  []*proc

	skip string // why it is not measured
	note string // for the report's notes
	// notef, when set, adds to the notes what is known only after the runs.
	notef func() string
}

// lab is the machinery the contestants share: process list, work folder, upstream, keys.
type lab struct {
	cfg    config
	log    *slog.Logger
	dir    string
	procs  *procs
	client *http.Client

	upstreamPort int
	upstream     *proc

	redisAddr string
	redis     *proc

	oidc *oidcIssuer
	// otlp receives the tracing contestant's spans.
	otlp *otlpSink
}

// upstreamURL is where contestants forward.
func (l *lab) upstreamURL() string {
	return "http://" + netip.AddrPortFrom(upstreamProxyIP, uint16(l.upstreamPort)).String()
}

// nginxBase is the part of every nginx configuration that keeps nginx inside the work folder
// and makes it comparable: one worker, no access log, long-lived client connections (nginx
// closes a client connection after 1000 requests by default, which would make wrk reconnect).
func (l *lab) nginxBase(name string) string {
	tmp := filepath.Join(l.dir, name+"-tmp")
	return fmt.Sprintf(`worker_processes 1;
daemon off;
master_process on;
pid %[1]s/%[2]s.pid;
error_log %[1]s/%[2]s.error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 1000000;
  keepalive_timeout 75s;
  client_body_temp_path %[3]s/body;
  proxy_temp_path %[3]s/proxy;
  fastcgi_temp_path %[3]s/fastcgi;
  uwsgi_temp_path %[3]s/uwsgi;
  scgi_temp_path %[3]s/scgi;
`, l.dir, name, tmp)
}

// startNginx writes conf and runs nginx on cpu, ready when GET url answers want.
func (l *lab) startNginx(ctx context.Context, name, cpu, conf, url string, header http.Header, want int) (*proc, error) {
	// Workers drop root; the temp folders must stay writable for them.
	if err := os.MkdirAll(filepath.Join(l.dir, name+"-tmp"), 0o777); err != nil {
		return nil, fmt.Errorf("creating nginx temp folder: %w", err)
	}
	_ = os.Chmod(filepath.Join(l.dir, name+"-tmp"), 0o777)
	path := filepath.Join(l.dir, name+".conf")
	if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
		return nil, fmt.Errorf("writing %s: %w", path, err)
	}
	p, err := l.procs.start(name, cpu, nil, "nginx", "-p", l.dir, "-e", filepath.Join(l.dir, name+".error.log"), "-c", path)
	if err != nil {
		return nil, err
	}
	return p, waitReady(ctx, p, 10*time.Second, requestOK(l.client, url, header, want))
}

// requestOK is a readiness check that sends the contestant's credentials.
func requestOK(client *http.Client, url string, header http.Header, want int) func() error {
	return func() error {
		req, err := http.NewRequest(http.MethodGet, url, nil)
		if err != nil {
			return err
		}
		if header != nil {
			req.Header = header.Clone()
		}
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			return fmt.Errorf("GET %s: status %d, want %d", url, resp.StatusCode, want)
		}
		return nil
	}
}

// startUpstream runs the 1 KB upstream (nginx return 200) on the load core.
func (l *lab) startUpstream(ctx context.Context) error {
	port, err := freePort()
	if err != nil {
		return err
	}
	l.upstreamPort = port
	body := strings.Repeat("x", 1024)
	conf := l.nginxBase("upstream") + fmt.Sprintf(`  server {
    listen %[1]s:%[3]d;
    listen %[2]s:%[3]d;
    location / {
      default_type text/plain;
      return 200 "%[4]s";
    }
  }
}
`, upstreamDirectIP, upstreamProxyIP, port, body)
	url := fmt.Sprintf("http://%s:%d%s", upstreamDirectIP, port, benchPath)
	p, err := l.startNginx(ctx, "upstream", l.cfg.loadCPU, conf, url, nil, http.StatusOK)
	if err != nil {
		return fmt.Errorf("starting the upstream: %w", err)
	}
	l.upstream = p
	return nil
}

// direct is the upstream measured on its own.
func (l *lab) direct() *contestant {
	ep := netip.AddrPortFrom(upstreamDirectIP, uint16(l.upstreamPort))
	return &contestant{name: "direct", title: "upstream direct (nginx return 200, 1 KB)",
		url: "http://" + ep.String() + benchPath, header: http.Header{}, endpoints: []netip.AddrPort{ep}, proc: l.upstream}
}

// listenOn picks a free port and returns the contestant's listen address, URL and endpoints
// (its listener and its connections to the upstream's proxy-side address).
func (l *lab) listenOn() (addr string, url string, eps []netip.AddrPort, err error) {
	port, err := freePort()
	if err != nil {
		return "", "", nil, err
	}
	ap := netip.AddrPortFrom(loopback, uint16(port))
	up := netip.AddrPortFrom(upstreamProxyIP, uint16(l.upstreamPort))
	return ap.String(), "http://" + ap.String() + benchPath, []netip.AddrPort{ap, up}, nil
}

// nginxProxy is nginx as a plain reverse proxy with upstream keep-alive.
func (l *lab) nginxProxy(ctx context.Context) (*contestant, error) {
	addr, url, eps, err := l.listenOn()
	if err != nil {
		return nil, err
	}
	conf := l.nginxBase("nginx-proxy") + fmt.Sprintf(`  upstream up {
    server %s;
    keepalive 64;
    keepalive_requests 1000000;
  }
  server {
    listen %s;
    location / {
      proxy_pass http://up;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }
  }
}
`, strings.TrimPrefix(l.upstreamURL(), "http://"), addr)
	c := &contestant{name: "nginx-proxy", title: "nginx reverse proxy (keep-alive)", url: url, header: http.Header{}, endpoints: eps}
	c.proc, err = l.startNginx(ctx, c.name, l.cfg.contestantCPU, conf, url, c.header, http.StatusOK)
	return c, err
}

// nginxKeyLimit is nginx checking the API key with map and limiting the consumer with limit_req.
func (l *lab) nginxKeyLimit(ctx context.Context) (*contestant, error) {
	addr, url, eps, err := l.listenOn()
	if err != nil {
		return nil, err
	}
	conf := l.nginxBase("nginx-key-limit") + fmt.Sprintf(`  map $http_apikey $consumer {
    default "";
    "%[3]s" "bench";
  }
  limit_req_zone $consumer zone=consumers:1m rate=1000000r/s;
  upstream up {
    server %[1]s;
    keepalive 64;
    keepalive_requests 1000000;
  }
  server {
    listen %[2]s;
    location / {
      if ($consumer = "") {
        return 401;
      }
      limit_req zone=consumers burst=1000000 nodelay;
      proxy_pass http://up;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }
  }
}
`, strings.TrimPrefix(l.upstreamURL(), "http://"), addr, benchKey)
	c := &contestant{name: "nginx-key-limit", title: "nginx `map` key check + `limit_req`", url: url,
		header: http.Header{"Apikey": {benchKey}}, endpoints: eps}
	c.proc, err = l.startNginx(ctx, c.name, l.cfg.contestantCPU, conf, url, c.header, http.StatusOK)
	if err == nil {
		// The key check must be real: without the key nginx refuses.
		err = requestOK(l.client, url, nil, http.StatusUnauthorized)()
	}
	return c, err
}

// caddyKey is Caddy checking the API key with a header matcher and proxying (no limit: Caddy has
// no built-in rate limiter).
func (l *lab) caddyKey(ctx context.Context) (*contestant, error) {
	c := &contestant{name: "caddy-key", title: "Caddy header-matcher key check", optional: true,
		header: http.Header{"Apikey": {benchKey}}}
	bin := l.cfg.caddy
	if bin == "" {
		c.skip = "Caddy not installed (make bench-load tries `go install github.com/caddyserver/caddy/v2/cmd/caddy@" + caddyVersion + "` into " + cacheDir() + "/bin)"
		return c, nil
	}
	addr, url, eps, err := l.listenOn()
	if err != nil {
		return nil, err
	}
	c.url, c.endpoints = url, eps
	conf := fmt.Sprintf(`{
	admin off
	auto_https off
	persist_config off
}
http://%s {
	@nokey not header Apikey %s
	respond @nokey 401
	reverse_proxy %s {
		transport http {
			keepalive_idle_conns_per_host 64
		}
	}
}
`, addr, benchKey, strings.TrimPrefix(l.upstreamURL(), "http://"))
	path := filepath.Join(l.dir, "Caddyfile")
	if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
		return nil, fmt.Errorf("writing Caddyfile: %w", err)
	}
	// XDG folders inside the work folder: Caddy must not touch the user's own.
	env := []string{"GOMAXPROCS=1", "XDG_DATA_HOME=" + l.dir + "/caddy-data", "XDG_CONFIG_HOME=" + l.dir + "/caddy-config"}
	c.proc, err = l.procs.start(c.name, l.cfg.contestantCPU, env, bin, "run", "--config", path, "--adapter", "caddyfile")
	if err != nil {
		return c, err
	}
	if err := waitReady(ctx, c.proc, 20*time.Second, requestOK(l.client, url, c.header, http.StatusOK)); err != nil {
		return c, err
	}
	return c, requestOK(l.client, url, nil, http.StatusUnauthorized)()
}

// pcSpec describes one Portcullis contestant's policy.
type pcSpec struct {
	name, title string
	optional    bool
	idp         map[string]any
	binding     map[string]any
	header      http.Header
	limit       map[string]any // the consumer's limit-count
	redis       bool
	// forwardAuth makes the policy a forward-auth one: nginx (trusted_proxies 127.0.0.1) asks,
	// and the route has no upstream.
	forwardAuth bool
	// login makes the route sign people in with the provider (its session); the harness signs
	// in once before measuring and every request carries the session cookie (session.go).
	login bool
	// shadow runs Portcullis with a shadow policy (-shadow): a copy of its own policy, so that
	// every request is decided twice (issue 18's cost of a shadow).
	shadow bool
	// tracing runs Portcullis with -tracing, every request sampled, exporting by OTLP/HTTP to
	// the harness's receiver (issue 17's cost of tracing); sampleRatio, when set, samples
	// that share of the traces instead (parentbased_traceidratio).
	tracing     bool
	sampleRatio string
}

// portcullisSpecs are the Portcullis contestants: each the same consumer limit, a different
// provider (or limit policy).
func (l *lab) portcullisSpecs() ([]pcSpec, error) {
	local := map[string]any{"count": limitCount, "time_window": 60}
	redisLimit := map[string]any{"count": limitCount, "time_window": 60, "policy": "redis"}
	redisSync := map[string]any{"count": limitCount, "time_window": 60, "policy": "redis", "sync_interval": "100ms"}
	keyIdP := map[string]any{"name": "keys", "type": "key-auth", "header": "apikey"}
	keyBinding := map[string]any{"idp": "keys", "key": benchKey}
	keyHeader := http.Header{"Apikey": {benchKey}}

	hsToken, err := signJWT(jwa.HS256, []byte(hsSecret), map[string]any{"key": "bench-hs"})
	if err != nil {
		return nil, err
	}
	rsKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, fmt.Errorf("generating RSA key: %w", err)
	}
	rsToken, err := signJWT(jwa.RS256, rsKey, map[string]any{"key": "bench-rs"})
	if err != nil {
		return nil, err
	}
	der, err := x509.MarshalPKIXPublicKey(&rsKey.PublicKey)
	if err != nil {
		return nil, fmt.Errorf("encoding RSA public key: %w", err)
	}
	rsPEM := string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}))
	hash, err := bcrypt.GenerateFromPassword([]byte(basicPassword), bcrypt.DefaultCost)
	if err != nil {
		return nil, fmt.Errorf("hashing password: %w", err)
	}
	oidcToken, err := l.oidc.token(oidcSubject, oidcAudience)
	if err != nil {
		return nil, err
	}
	jwtIdP := map[string]any{"name": "jwt", "type": "jwt-auth"}
	bearer := func(tok string) http.Header { return http.Header{"Authorization": {"Bearer " + tok}} }
	basic := "Basic " + base64.StdEncoding.EncodeToString([]byte(basicUser+":"+basicPassword))

	return []pcSpec{
		{name: "pc-key", title: "Portcullis key-auth + limit-count", idp: keyIdP, binding: keyBinding, header: keyHeader, limit: local},
		{name: "pc-key-tracing", title: "Portcullis key-auth + limit-count, traced (100 % sampled, OTLP/HTTP)", idp: keyIdP, binding: keyBinding, header: keyHeader, limit: local, tracing: true},
		{name: "pc-key-tracing-10", title: "Portcullis key-auth + limit-count, traced (10 % sampled, OTLP/HTTP)", idp: keyIdP, binding: keyBinding, header: keyHeader, limit: local, tracing: true, sampleRatio: "0.1"},
		{name: "pc-key-shadow", title: "Portcullis key-auth + limit-count, with a shadow policy", idp: keyIdP, binding: keyBinding, header: keyHeader, limit: local, shadow: true},
		{name: "pc-jwt-hs256", title: "Portcullis jwt-auth HS256 + limit-count", idp: jwtIdP,
			binding: map[string]any{"idp": "jwt", "key": "bench-hs", "secret": hsSecret, "algorithm": "HS256"}, header: bearer(hsToken), limit: local},
		{name: "pc-jwt-rs256", title: "Portcullis jwt-auth RS256 + limit-count", idp: jwtIdP,
			binding: map[string]any{"idp": "jwt", "key": "bench-rs", "public_key": rsPEM, "algorithm": "RS256"}, header: bearer(rsToken), limit: local},
		{name: "pc-basic", title: "Portcullis basic-auth (bcrypt, cached) + limit-count", idp: map[string]any{"name": "basic", "type": "basic-auth"},
			binding: map[string]any{"idp": "basic", "username": basicUser, "password": string(hash)}, header: http.Header{"Authorization": {basic}}, limit: local},
		{name: "pc-oidc", title: "Portcullis OIDC bearer (RS256, JWKS) + limit-count", optional: true,
			idp:     map[string]any{"name": "partner", "type": "oidc", "issuer": l.oidc.issuer, "audience": oidcAudience, "subject_claim": "sub"},
			binding: map[string]any{"idp": "partner", "subject": oidcSubject}, header: bearer(oidcToken), limit: local},
		l.pcSessionSpec(local),
		{name: "pc-redis", title: "Portcullis key-auth + limit-count (redis)", idp: keyIdP, binding: keyBinding, header: keyHeader, limit: redisLimit, redis: true},
		{name: "pc-redis-sync", title: "Portcullis key-auth + limit-count (redis, sync_interval 100ms)", idp: keyIdP, binding: keyBinding, header: keyHeader, limit: redisSync, redis: true},
	}, nil
}

// signJWT signs claims (plus iat and a 3-hour exp: longer than any run) with key.
func signJWT(alg jwa.SignatureAlgorithm, key any, claims map[string]any) (string, error) {
	tok := jwt.New()
	now := time.Now()
	claims["iat"] = now.Unix()
	claims["exp"] = now.Add(3 * time.Hour).Unix()
	for k, v := range claims {
		if err := tok.Set(k, v); err != nil {
			return "", fmt.Errorf("setting claim %s: %w", k, err)
		}
	}
	b, err := jwt.Sign(tok, jwt.WithKey(alg, key))
	if err != nil {
		return "", fmt.Errorf("signing %s token: %w", alg, err)
	}
	return string(b), nil
}

// portcullisPolicy renders a one-route, one-consumer policy.
func (l *lab) portcullisPolicy(s pcSpec, listen, admin string) ([]byte, error) {
	p := map[string]any{
		"listen":       listen,
		"admin_listen": admin,
		"idps":         []any{s.idp},
		"consumers": []any{map[string]any{
			"username": "bench",
			"idps":     []any{s.binding},
			"plugins":  map[string]any{"limit-count": s.limit},
		}},
		"routes": []any{map[string]any{
			"name":     "bench",
			"paths":    []string{benchPath},
			"upstream": map[string]any{"targets": []any{map[string]any{"url": l.upstreamURL()}}},
		}},
	}
	if s.login {
		p["routes"].([]any)[0].(map[string]any)["login"] = s.idp["name"]
	}
	if s.forwardAuth {
		p["trusted_proxies"] = []string{"127.0.0.1"}
		p["forward_auth"] = map[string]any{}
		p["routes"] = []any{map[string]any{"name": "bench", "paths": []string{benchPath}}}
	}
	if s.redis {
		p["redis"] = map[string]any{"addr": l.redisAddr}
	}
	return json.MarshalIndent(p, "", "  ")
}

// portcullis validates and starts one Portcullis contestant. A policy that does not validate
// is a skip (with the validator's words) for an optional contestant.
func (l *lab) portcullis(ctx context.Context, s pcSpec) (*contestant, error) {
	c := &contestant{name: s.name, title: s.title, optional: s.optional, header: s.header}
	if s.redis {
		if err := l.startRedis(ctx); err != nil {
			return c, err
		}
		c.aux = []*proc{l.redis}
	}
	listen, url, eps, err := l.listenOn()
	if err != nil {
		return c, err
	}
	c.url, c.endpoints = url, eps
	if s.tracing {
		c.notef = l.otlp.note
	}
	if c.proc, err = l.startPortcullis(ctx, s, s.name, listen); err != nil {
		return c, err
	}
	if s.login {
		if err := l.portcullisSignIn(ctx, c, s.idp["name"].(string)); err != nil {
			return c, fmt.Errorf("signing in to Portcullis: %w", err)
		}
	}
	if err := requestOK(l.client, url, c.header, http.StatusOK)(); err != nil {
		return c, err
	}
	// The credential check must be real: without credentials Portcullis refuses.
	return c, requestOK(l.client, url, nil, http.StatusUnauthorized)()
}

// startPortcullis validates s's policy and runs Portcullis as name on the contestant's CPU,
// listening on listen; it is ready when its admin listener's /readyz answers 200.
func (l *lab) startPortcullis(ctx context.Context, s pcSpec, name, listen string) (*proc, error) {
	adminPort, err := freePort()
	if err != nil {
		return nil, err
	}
	admin := net.JoinHostPort("127.0.0.1", strconv.Itoa(adminPort))
	policy, err := l.portcullisPolicy(s, listen, admin)
	if err != nil {
		return nil, fmt.Errorf("rendering policy: %w", err)
	}
	path := filepath.Join(l.dir, name+".json")
	if err := os.WriteFile(path, policy, 0o600); err != nil {
		return nil, fmt.Errorf("writing policy: %w", err)
	}
	if out, err := exec.CommandContext(ctx, l.cfg.portcullis, "validate", "-c", path).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("policy does not validate: %s", strings.TrimSpace(string(out)))
	}
	args := []string{"run", "-c", path, "-access-log=false", "-watch=false"}
	if s.shadow {
		// The candidate is the same policy: every request is decided by both, all "same".
		shadowPath := filepath.Join(l.dir, name+"-shadow.json")
		if err := os.WriteFile(shadowPath, policy, 0o600); err != nil {
			return nil, fmt.Errorf("writing the shadow policy: %w", err)
		}
		args = append(args, "-shadow", shadowPath)
	}
	env := append([]string{"GOMAXPROCS=1"}, l.cfg.pcEnv...)
	if s.tracing {
		args = append(args, "-tracing")
		env = append(env, "OTEL_EXPORTER_OTLP_ENDPOINT="+l.otlp.url, "OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf")
		if s.sampleRatio != "" {
			env = append(env, "OTEL_TRACES_SAMPLER=parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG="+s.sampleRatio)
		} else {
			env = append(env, "OTEL_TRACES_SAMPLER=always_on")
		}
	}
	p, err := l.procs.start(name, l.cfg.contestantCPU, env, l.cfg.portcullis, args...)
	if err != nil {
		return nil, err
	}
	return p, waitReady(ctx, p, 30*time.Second, httpOK(l.client, "http://"+admin+"/readyz", http.StatusOK))
}

// startRedis runs one redis-server on the load core, once.
func (l *lab) startRedis(ctx context.Context) error {
	if l.redis != nil {
		return nil
	}
	if _, err := exec.LookPath("redis-server"); err != nil {
		return errors.New("redis-server not found (apt-get install redis-server)")
	}
	port, err := freePort()
	if err != nil {
		return err
	}
	l.redisAddr = net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	p, err := l.procs.start("redis", l.cfg.loadCPU, nil, "redis-server", "--port", strconv.Itoa(port), "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "no", "--dir", l.dir, "--daemonize", "no", "--loglevel", "warning")
	if err != nil {
		return err
	}
	l.redis = p
	return waitReady(ctx, p, 10*time.Second, func() error { return redistest.Ping(l.redisAddr) })
}

// oidcIssuer is an in-process OpenID provider: discovery and JWKS, and tokens signed with a
// real RSA key. Only the gateway's start-up (and key refreshes) reach it during a run.
type oidcIssuer struct {
	issuer string
	key    jwk.Key // private, with kid and alg
	srv    *http.Server
	login  *oidcLogin // the authorization-code flow, for the sign-ins (fwdauth.go, session.go)
}

func newOIDCIssuer() (*oidcIssuer, error) {
	raw, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, fmt.Errorf("generating OIDC key: %w", err)
	}
	key, err := jwk.FromRaw(raw)
	if err != nil {
		return nil, fmt.Errorf("wrapping OIDC key: %w", err)
	}
	if err := errors.Join(key.Set(jwk.KeyIDKey, "bench-1"), key.Set(jwk.AlgorithmKey, jwa.RS256)); err != nil {
		return nil, fmt.Errorf("labelling OIDC key: %w", err)
	}
	pub, err := jwk.PublicKeyOf(key)
	if err != nil {
		return nil, fmt.Errorf("deriving OIDC public key: %w", err)
	}
	set := jwk.NewSet()
	if err := set.AddKey(pub); err != nil {
		return nil, fmt.Errorf("building JWKS: %w", err)
	}
	jwks, err := json.Marshal(set)
	if err != nil {
		return nil, fmt.Errorf("encoding JWKS: %w", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("listening for the OIDC issuer: %w", err)
	}
	o := &oidcIssuer{issuer: "http://" + ln.Addr().String(), key: key, login: newOIDCLogin()}
	discovery, err := json.Marshal(map[string]any{
		"issuer":                                o.issuer,
		"jwks_uri":                              o.issuer + "/jwks",
		"authorization_endpoint":                o.issuer + "/authorize",
		"token_endpoint":                        o.issuer + "/token",
		"response_types_supported":              []string{"code"},
		"subject_types_supported":               []string{"public"},
		"id_token_signing_alg_values_supported": []string{"RS256"},
	})
	if err != nil {
		return nil, fmt.Errorf("encoding discovery: %w", err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /.well-known/openid-configuration", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Write(discovery)
	})
	mux.HandleFunc("GET /jwks", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Write(jwks)
	})
	mux.HandleFunc("GET /authorize", o.authorize)
	mux.HandleFunc("POST /token", o.tokenEndpoint)
	o.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go o.srv.Serve(ln)
	return o, nil
}

// token signs an access token for sub.
func (o *oidcIssuer) token(sub, aud string) (string, error) {
	return signJWT(jwa.RS256, o.key, map[string]any{"iss": o.issuer, "aud": aud, "sub": sub})
}

// Close stops the issuer's server.
func (o *oidcIssuer) Close() error { return o.srv.Close() }
