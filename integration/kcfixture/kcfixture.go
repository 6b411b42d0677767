// Package kcfixture runs a real Keycloak for tests, with the realms of
// integration/testdata/realms imported. Start it once per test binary (TestMain) and share it:
// a fresh Keycloak takes tens of seconds to start on a small machine.
//
// Start picks the first of these that works:
//
//  1. KEYCLOAK_URL is set (with KEYCLOAK_ADMIN / KEYCLOAK_ADMIN_PASSWORD, default admin/admin):
//     that server is used; realms it lacks are imported through the admin API.
//  2. A Docker engine answers: testcontainers-go runs quay.io/keycloak/keycloak in
//     `start-dev --import-realm`.
//  3. The Keycloak distribution from Maven Central, installed by scripts/fetch-keycloak.sh into
//     ${PORTCULLIS_CACHE:-$HOME/.cache/portcullis}: a private copy runs `kc.sh start-dev` on free
//     loopback ports with a fresh database, and is stopped by its process group.
//
// When none works, Start returns an error wrapping ErrNoKeycloak; Require turns it into a skip,
// or into a failure when CI=true, because CI must really exercise Keycloak.
package kcfixture

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"testing"
	"time"
)

// Version is the Keycloak version of the container image and of the distribution.
const Version = "26.5.6"

// Realms, clients, users, roles and permissions of the realm exports. Secrets are test-only.
const (
	RealmCorp     = "corp"
	RealmPartners = "partners"

	// ClientGateway is the confidential client Portcullis uses in realm corp: the resource
	// server of Authorization Services (resource "petstore", scopes read/write), the audience
	// every corp token carries, and the introspection client.
	ClientGateway = "gateway"
	GatewaySecret = "gateway-secret"

	// ClientPortal is a public client with the password grant, for user tokens.
	ClientPortal = "portal-cli"

	// Service-account clients of realm corp (machine consumers). Their tokens have
	// azp = client id and sub = the service account's user id below.
	ClientFetchBot       = "fetch-bot"
	FetchBotSecret       = "fetch-bot-secret"
	FetchBotSubject      = "f37c4b07-0000-4000-8000-000000000003"
	ClientPartnerSvc     = "partner-svc"
	PartnerSvcSecret     = "partner-svc-secret"
	PartnerSvcSubject    = "9a27e500-0000-4000-8000-000000000004"
	ClientNoConsumer     = "no-consumer-svc"
	NoConsumerSecret     = "no-consumer-svc-secret"
	NoConsumerSubject    = "00c0b500-0000-4000-8000-000000000005"
	ClientOtherAudience  = "other-svc" // its tokens carry aud "other-api", not "gateway"
	OtherAudienceSecret  = "other-svc-secret"
	OtherAudienceSubject = "07e25500-0000-4000-8000-000000000006"

	// Users of realm corp.
	UserAlice     = "alice"
	AlicePassword = "alice-password"
	AliceSubject  = "a11ce000-0000-4000-8000-000000000001"
	UserBob       = "bob"
	BobPassword   = "bob-password"
	BobSubject    = "b0b00000-0000-4000-8000-000000000002"

	// Realm roles, client roles (of client gateway) and groups of realm corp.
	// alice: api-user, admin; gateway: petstore-admin, petstore-viewer; group engineering.
	// bob: api-user. fetch-bot: api-user; gateway: petstore-viewer; group bots.
	// partner-svc, no-consumer-svc: api-user.
	RoleAPIUser           = "api-user"
	RoleAdmin             = "admin"
	ClientRolePetViewer   = "petstore-viewer"
	ClientRolePetAdmin    = "petstore-admin"
	GroupEngineering      = "engineering"
	GroupBots             = "bots"
	PermissionPetRead     = "petstore#read"  // granted to fetch-bot and alice
	PermissionPetWrite    = "petstore#write" // granted to alice only
	RealmRolePartner      = "partner"        // realm partners
	ClientPartnersGateway = "portcullis"     // realm partners: audience and introspection client
	PartnersGatewaySecret = "portcullis-secret"
	ClientPartnerApp      = "partner-app" // realm partners: a partner's service account
	PartnerAppSecret      = "partner-app-secret"
	PartnerAppSubject     = "9a2a7000-0000-4000-8000-000000000012"
	UserCarol             = "carol" // realm partners
	CarolPassword         = "carol-password"
	CarolSubject          = "ca201000-0000-4000-8000-000000000011"
)

// ErrNoKeycloak means no way to run Keycloak was found (no KEYCLOAK_URL, no Docker engine, no
// Java or Maven for the distribution).
var ErrNoKeycloak = errors.New("no Keycloak available")

// ErrNotSupported is returned by StopServer/StartServer on a server the fixture does not own.
var ErrNotSupported = errors.New("not supported by this Keycloak fixture")

// Mode says how the fixture got its Keycloak.
type Mode string

const (
	ModeExternal     Mode = "external"     // KEYCLOAK_URL
	ModeContainer    Mode = "container"    // testcontainers-go
	ModeDistribution Mode = "distribution" // kc.sh from the Maven Central distribution
)

// Keycloak is a running Keycloak with the test realms.
type Keycloak struct {
	// URL is the server's base URL without a trailing slash ("http://127.0.0.1:41234"); a realm's
	// issuer is URL + "/realms/" + realm.
	URL string
	// Mode says how it was started.
	Mode Mode
	// AdminUser and AdminPassword are the master realm's administrator.
	AdminUser     string
	AdminPassword string

	client *http.Client
	logger *slog.Logger
	server server

	mu         sync.Mutex
	adminToken string
	adminExp   time.Time
}

// server is the way a Keycloak runs: a process, a container, or somebody else's.
type server interface {
	// stop ends the server, keeping its data for start.
	stop(ctx context.Context) error
	// start starts a stopped server again on the same URL and waits until it is ready.
	start(ctx context.Context) error
	// close stops the server for good and removes what it left.
	close(ctx context.Context) error
}

// Issuer returns a realm's issuer URL.
func (k *Keycloak) Issuer(realm string) string { return k.URL + "/realms/" + realm }

// Start gets a Keycloak with the test realms by the first way that works (see the package doc).
// ctx bounds the whole start-up, including a first download of the distribution.
func Start(ctx context.Context) (*Keycloak, error) {
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	k := &Keycloak{
		AdminUser:     envOr("KEYCLOAK_ADMIN", "admin"),
		AdminPassword: envOr("KEYCLOAK_ADMIN_PASSWORD", "admin"),
		client:        &http.Client{Timeout: 30 * time.Second},
		logger:        logger.With("fixture", "keycloak"),
	}
	realms, err := RealmsDir()
	if err != nil {
		return nil, err
	}

	if u := os.Getenv("KEYCLOAK_URL"); u != "" {
		k.URL = trimSlash(u)
		k.Mode = ModeExternal
		k.server = externalServer{}
		if err := k.importMissingRealms(ctx, realms); err != nil {
			return nil, fmt.Errorf("preparing Keycloak at KEYCLOAK_URL %s: %w", k.URL, err)
		}
		return k, nil
	}

	var reasons []error
	if err := dockerReachable(ctx); err != nil {
		reasons = append(reasons, fmt.Errorf("docker: %w", err))
	} else {
		srv, url, err := startContainer(ctx, k, realms)
		if err != nil {
			return nil, fmt.Errorf("starting Keycloak in a container: %w", err)
		}
		k.URL, k.Mode, k.server = url, ModeContainer, srv
		return k, nil
	}

	srv, url, err := startDistribution(ctx, k, realms)
	if err == nil {
		k.URL, k.Mode, k.server = url, ModeDistribution, srv
		return k, nil
	}
	if !errors.Is(err, ErrNoKeycloak) {
		return nil, fmt.Errorf("starting the Keycloak distribution: %w", err)
	}
	reasons = append(reasons, fmt.Errorf("distribution: %w", err))
	return nil, fmt.Errorf("%w (set KEYCLOAK_URL, run a Docker engine, or install Java and Maven): %w",
		ErrNoKeycloak, errors.Join(reasons...))
}

// Stop ends the Keycloak the fixture started and removes its data. It does nothing to an
// external server.
func (k *Keycloak) Stop() error {
	if k == nil || k.server == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	return k.server.close(ctx)
}

// StopServer stops Keycloak but keeps its data (realms, keys, sessions), for tests of an IdP
// that goes away mid-run. StartServer brings it back on the same URL.
func (k *Keycloak) StopServer(ctx context.Context) error {
	k.mu.Lock()
	k.adminToken = ""
	k.mu.Unlock()
	return k.server.stop(ctx)
}

// StartServer starts a server stopped by StopServer and waits until the realms answer.
func (k *Keycloak) StartServer(ctx context.Context) error { return k.server.start(ctx) }

// Restart is StopServer then StartServer.
func (k *Keycloak) Restart(ctx context.Context) error {
	if err := k.StopServer(ctx); err != nil {
		return err
	}
	return k.StartServer(ctx)
}

// Main is a TestMain body for packages that need Keycloak: it starts the fixture (bounded by
// timeout), stores it or the start error in *kc and *startErr for Require, runs the tests and
// stops the fixture. In CI (CI=true) a Keycloak that cannot be started fails the run.
//
//	var kc *kcfixture.Keycloak
//	var kcErr error
//	func TestMain(m *testing.M) { os.Exit(kcfixture.Main(m, 5*time.Minute, &kc, &kcErr)) }
func Main(m *testing.M, timeout time.Duration, kc **Keycloak, startErr *error) int {
	flag.Parse() // for testing.Short; m.Run parses again, harmlessly
	if testing.Short() {
		*startErr = ErrShort
		return m.Run()
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	k, err := Start(ctx)
	cancel()
	*kc, *startErr = k, err
	if err != nil {
		fmt.Fprintf(os.Stderr, "kcfixture: %v\n", err)
	} else {
		fmt.Fprintf(os.Stderr, "kcfixture: Keycloak %s at %s (%s)\n", Version, k.URL, k.Mode)
	}
	code := m.Run()
	if err := k.Stop(); err != nil {
		fmt.Fprintf(os.Stderr, "kcfixture: stopping Keycloak: %v\n", err)
	}
	if err != nil && InCI() && code == 0 {
		fmt.Fprintln(os.Stderr, "kcfixture: CI=true and Keycloak could not be started: failing")
		code = 1
	}
	return code
}

// Require returns the shared Keycloak, or ends the test: a skip locally, a failure in CI.
func Require(tb testing.TB, kc *Keycloak, startErr error) *Keycloak {
	tb.Helper()
	if startErr == nil && kc != nil {
		return kc
	}
	if testing.Short() {
		tb.Skip("skipping: needs Keycloak, and -short asks for no Keycloak")
	}
	if startErr == nil {
		startErr = errors.New("fixture not started (call kcfixture.Main or Start in TestMain)")
	}
	if InCI() || !errors.Is(startErr, ErrNoKeycloak) {
		tb.Fatalf("Keycloak is required: %v", startErr)
	}
	tb.Skipf("skipping: needs Keycloak: %v", startErr)
	return nil
}

// ErrShort is the start error of a -short run: the tests that need Keycloak skip, in CI too
// (`make test` never runs with -short; `make test-unit` does).
var ErrShort = errors.New("-short: Keycloak not started")

// InCI reports whether the tests run in CI (CI=true), where Keycloak is mandatory.
func InCI() bool { return os.Getenv("CI") == "true" }

// RealmsDir finds integration/testdata/realms: from the module root above the working
// directory, else beside this source file.
func RealmsDir() (string, error) {
	root, err := repoRoot()
	if err != nil {
		return "", err
	}
	dir := filepath.Join(root, "integration", "testdata", "realms")
	if _, err := os.Stat(filepath.Join(dir, "corp-realm.json")); err != nil {
		return "", fmt.Errorf("finding the realm exports: %w", err)
	}
	return dir, nil
}

// repoRoot is the directory holding go.mod, found upwards from the working directory or from
// this source file.
func repoRoot() (string, error) {
	var starts []string
	if wd, err := os.Getwd(); err == nil {
		starts = append(starts, wd)
	}
	if _, file, _, ok := runtime.Caller(0); ok {
		starts = append(starts, filepath.Dir(file))
	}
	for _, dir := range starts {
		for d := dir; ; d = filepath.Dir(d) {
			if _, err := os.Stat(filepath.Join(d, "scripts", "fetch-keycloak.sh")); err == nil {
				if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
					return d, nil
				}
			}
			if filepath.Dir(d) == d {
				break
			}
		}
	}
	return "", errors.New("finding the repository root (go.mod beside scripts/fetch-keycloak.sh)")
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

func trimSlash(s string) string {
	for len(s) > 0 && s[len(s)-1] == '/' {
		s = s[:len(s)-1]
	}
	return s
}

// externalServer is a Keycloak the fixture does not own.
type externalServer struct{}

func (externalServer) stop(context.Context) error  { return ErrNotSupported }
func (externalServer) start(context.Context) error { return ErrNotSupported }
func (externalServer) close(context.Context) error { return nil }
