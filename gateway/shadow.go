package gateway

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"reflect"
	"runtime/debug"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/portcullis/portcullis/gateway/ratelimit"
	"github.com/portcullis/portcullis/idp"
	"github.com/portcullis/portcullis/policies"
)

// A shadow policy is a candidate decided beside the served policy on live traffic: a copy of
// each served request is decided by it off the response path, without side effects, and the
// two decisions are compared. Only the served decision acts.

// The results of comparing a served decision with the candidate's.
const (
	shadowSame          = "same"
	shadowDifferent     = "different"
	shadowNotComparable = "not_comparable"
	shadowDropped       = "dropped"
)

var shadowResults = [...]string{shadowSame, shadowDifferent, shadowNotComparable, shadowDropped}

// Indexes of shadowResults.
const (
	iSame = iota
	iDifferent
	iNotComparable
	iDropped
)

// ShadowOptions configure a Shadow.
type ShadowOptions struct {
	// Logger receives the shadow_difference lines and the candidate's load errors.
	Logger *slog.Logger
	// Load reads the candidate policy: at start and on every reload.
	Load Loader
	// Metrics is where portcullis_shadow_decisions_total is registered (the served gateway's).
	Metrics *Metrics
	// Queue bounds the requests waiting to be decided by the candidate (default 1024); a request
	// that finds it full is dropped and counted. Workers decide them (default 2).
	Queue, Workers int
}

// Shadow decides copies of the served requests with a candidate policy. Its gateway has a
// rate-limit registry of its own, never consumed, and metrics of its own, never scraped.
type Shadow struct {
	log      *slog.Logger
	load     Loader
	limiters *ratelimit.Registry

	candidate atomic.Pointer[Gateway] // nil until a candidate has loaded
	queue     chan shadowJob
	stop      chan struct{}
	workers   sync.WaitGroup

	counters [len(shadowResults)]prometheus.Counter
	counts   [len(shadowResults)]atomic.Uint64

	// rules caches what the last pair of served and candidate snapshots allows to compare.
	rulesMu sync.Mutex
	rules   *shadowRules

	reloadMu  sync.Mutex // one Reload at a time
	mu        sync.Mutex // guards the fields below and closed
	loadedAt  time.Time
	lastErr   error
	lastErrAt time.Time
	closed    bool
}

// shadowJob is one request for the candidate: the copy taken before serving rewrote the
// request, the served decision and the policy that made it.
type shadowJob struct {
	req    *http.Request
	served shadowDecision
	policy *policies.Snapshot
	// requestID is the served request's X-Request-Id: the difference's line names the access
	// log's.
	requestID string
}

// shadowDecision is what is compared: never a credential.
type shadowDecision struct {
	Route, Consumer string
	Status          int
	Step            Step
}

// NewShadow loads the candidate and starts the workers. A candidate that fails to load is
// logged; the gateway serves without one until a reload loads it.
func NewShadow(opts ShadowOptions) *Shadow {
	if opts.Workers <= 0 {
		opts.Workers = 2
	}
	s := newShadow(opts)
	s.startWorkers(opts.Workers)
	return s
}

// newShadow is NewShadow without the workers (the tests start them when they choose).
func newShadow(opts ShadowOptions) *Shadow {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Metrics == nil {
		opts.Metrics = NewMetrics()
	}
	if opts.Queue <= 0 {
		opts.Queue = 1024
	}
	s := &Shadow{
		log:  opts.Logger,
		load: opts.Load,
		// Never asked (Mode{} only describes limits), so it needs no Redis: a redis limit of the
		// candidate would only log that there is none.
		limiters: ratelimit.NewRegistry(ratelimit.RegistryOptions{Logger: slog.New(slog.DiscardHandler)}),
		queue:    make(chan shadowJob, opts.Queue),
		stop:     make(chan struct{}),
	}
	vec := opts.Metrics.shadowDecisions()
	for i, r := range shadowResults {
		s.counters[i] = vec.WithLabelValues(r)
	}
	if err := s.Reload(); err != nil {
		s.log.Error("shadow policy did not load; serving without one until a reload loads it", "err", err)
	}
	return s
}

func (s *Shadow) startWorkers(n int) {
	for range n {
		s.workers.Go(s.work)
	}
}

// Reload loads the candidate again. On error the previous candidate keeps deciding.
func (s *Shadow) Reload() error {
	s.reloadMu.Lock()
	defer s.reloadMu.Unlock()
	snap, err := safeLoad(s.log, s.load)
	if err == nil {
		err = s.swap(snap)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err != nil {
		s.lastErr, s.lastErrAt = err, time.Now()
		return err
	}
	s.lastErr, s.loadedAt = nil, snap.LoadedAt
	s.log.Info("shadow policy loaded", "version", snap.Version, "source", snap.Source)
	return nil
}

// swap makes snap the candidate; on error snap is closed.
func (s *Shadow) swap(snap *policies.Snapshot) (err error) {
	defer func() {
		if r := recover(); r != nil {
			s.log.Error("panic while compiling the shadow policy", "panic", fmt.Sprint(r), "stack", string(debug.Stack()))
			err = fmt.Errorf("compiling the shadow policy: %w: %v", errPanic, r)
		}
		if err != nil {
			_ = snap.Close()
		}
	}()
	// Under mu, so that Close either sees the candidate made here or makes swap refuse.
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return errServerClosed
	}
	if gw := s.candidate.Load(); gw != nil {
		return gw.Swap(snap)
	}
	// Metrics of its own: the candidate's policy_info and decisions are not the served ones.
	gw, err := New(snap, Options{Logger: s.log, Limiters: s.limiters, Metrics: NewMetrics()})
	if err != nil {
		return err
	}
	s.candidate.Store(gw)
	return nil
}

// Close stops taking requests, waits for the workers to decide the ones queued, and closes the
// candidate.
func (s *Shadow) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	s.mu.Unlock()
	close(s.stop)
	s.workers.Wait()
	var err error
	if gw := s.candidate.Load(); gw != nil {
		err = gw.Close()
	}
	return errors.Join(err, s.limiters.Close())
}

// ShadowStatus is the shadow object of /status.
type ShadowStatus struct {
	Version         string            `json:"version"`
	Source          string            `json:"source,omitempty"`
	LoadedAt        time.Time         `json:"loaded_at,omitzero"`
	LastReloadError string            `json:"last_reload_error,omitempty"`
	LastReloadErrAt time.Time         `json:"last_reload_error_at,omitzero"`
	Decisions       map[string]uint64 `json:"decisions"`
}

// Status reports the candidate and the counts.
func (s *Shadow) Status() *ShadowStatus {
	st := &ShadowStatus{Decisions: map[string]uint64{}}
	if gw := s.candidate.Load(); gw != nil {
		snap := gw.Snapshot()
		st.Version, st.Source = snap.Version, snap.Source
	}
	for i, r := range shadowResults {
		st.Decisions[r] = s.counts[i].Load()
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	st.LoadedAt = s.loadedAt
	if s.lastErr != nil {
		st.LastReloadError, st.LastReloadErrAt = s.lastErr.Error(), s.lastErrAt
	}
	return st
}

func (s *Shadow) count(result int) {
	s.counts[result].Add(1)
	s.counters[result].Inc()
}

// copyRequest copies r for the candidate before serving rewrites it (the path normalised, the
// client's identity headers dropped, hide_credentials): method, URL, headers, remote address,
// TLS state; not the body. nil, counted as dropped, when the queue is full already or there is
// no candidate yet (not counted).
func (s *Shadow) copyRequest(r *http.Request) *http.Request {
	if s.candidate.Load() == nil {
		return nil
	}
	if len(s.queue) == cap(s.queue) {
		s.count(iDropped)
		return nil
	}
	cp := r.Clone(context.Background())
	cp.Body, cp.GetBody = http.NoBody, nil
	return cp
}

// submit queues the copy with the served decision; a full queue drops it.
func (s *Shadow) submit(cp *http.Request, snap *policies.Snapshot, x *exchange) {
	served := shadowDecision{Route: x.route, Consumer: x.consumer, Status: x.status, Step: x.step}
	if x.step == StepProxy {
		served.Status = http.StatusOK // allowed: what the upstream answered is not the policy's
	}
	select {
	case <-s.stop:
	case s.queue <- shadowJob{req: cp, served: served, policy: snap, requestID: x.requestID}:
	default:
		s.count(iDropped)
	}
}

// work decides queued requests until Close, then the ones still queued.
func (s *Shadow) work() {
	for {
		select {
		case j := <-s.queue:
			s.decide(j)
		case <-s.stop:
			for {
				select {
				case j := <-s.queue:
					s.decide(j)
				default:
					return
				}
			}
		}
	}
}

// decide has the candidate decide j's request, compares, counts and logs a difference.
func (s *Shadow) decide(j shadowJob) {
	gw := s.candidate.Load()
	if gw == nil {
		return
	}
	c := gw.acquire()
	defer c.inflight.RUnlock()
	if why := s.rulesFor(j.policy, c.snap).notComparable(j.req); why != "" {
		s.count(iNotComparable)
		s.log.Debug("shadow not comparable", "route", j.served.Route, "reason", why)
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cand := gw.shadowDecide(c, j.req.WithContext(ctx))
	switch {
	case j.served.Step == StepLimit && (cand.Step == StepLimit || cand.Step == StepProxy):
		// Refused (or failed) by a limit: the candidate's limits are never applied, so whether
		// it would have refused too cannot be told.
		s.count(iNotComparable)
	case cand == j.served:
		s.count(iSame)
	default:
		s.count(iDifferent)
		s.log.Info("shadow_difference", "request_id", j.requestID, "method", j.req.Method, "path", j.req.URL.Path,
			"served_route", j.served.Route, "served_consumer", j.served.Consumer, "served_status", j.served.Status, "served_step", string(j.served.Step),
			"candidate_route", cand.Route, "candidate_consumer", cand.Consumer, "candidate_status", cand.Status, "candidate_step", string(cand.Step),
			"candidate_version", c.snap.Version)
	}
}

// shadowDecide decides r on c without side effects (Mode{}: no limit consumed, no metric), with
// the status serving would answer.
func (g *Gateway) shadowDecide(c *compiled, r *http.Request) shadowDecision {
	x := &exchange{}
	err := g.decide(c, r, x, Mode{})
	d := shadowDecision{Route: x.route, Consumer: x.consumer, Status: http.StatusOK, Step: x.step}
	if err != nil {
		d.Status = asHTTPError(err).Status
		// Serving turns a missing credential into the sign-in redirect for a browser; asking for
		// the redirect is not side-effect free (state cookie, discovery), the condition is.
		if x.step == StepAuthenticate && x.rt.login != nil && errors.Is(err, idp.ErrNoCredential) && wantsHTML(r) {
			d.Status = http.StatusFound
		}
	}
	return d
}

// shadowRules is what a pair of served and candidate policies allows to compare.
type shadowRules struct {
	served, candidate *policies.Snapshot
	// bodyNeeded: a provider of either reads the body (hmac-auth validate_request_body), which
	// the copy has not.
	bodyNeeded bool
	// tokens are the oidc and keycloak providers of both; tokensComparable says a token they
	// read may be verified by the candidate without asking the issuer beyond what the served
	// policy does: the same providers in both, all oidc, none introspecting.
	tokens           []policies.IdP
	tokensComparable bool
	// sessions: a provider of either signs browsers in; a session may be refreshed at the
	// issuer (a side effect), so a request with cookies is not compared.
	sessions bool
}

func (s *Shadow) rulesFor(served, candidate *policies.Snapshot) *shadowRules {
	s.rulesMu.Lock()
	defer s.rulesMu.Unlock()
	if r := s.rules; r != nil && r.served == served && r.candidate == candidate {
		return r
	}
	r := &shadowRules{served: served, candidate: candidate, tokensComparable: true}
	var sets [2][]policies.IdP
	for i, snap := range [2]*policies.Snapshot{served, candidate} {
		for _, d := range snap.Policy.IdPs {
			switch d.Type {
			case "hmac-auth":
				r.bodyNeeded = r.bodyNeeded || d.ValidateRequestBody
			case "oidc", "keycloak":
				sets[i] = append(sets[i], d)
				r.tokens = append(r.tokens, d)
				r.sessions = r.sessions || d.Session != nil
				if d.Type == "keycloak" || d.Introspection {
					r.tokensComparable = false // asks the issuer per token (UMA, introspection)
				}
			}
		}
	}
	if !reflect.DeepEqual(sets[0], sets[1]) {
		r.tokensComparable = false
	}
	s.rules = r
	return r
}

// notComparable says why r cannot be decided by the candidate as the served policy decided
// it; "" when it can.
func (r *shadowRules) notComparable(req *http.Request) string {
	if r.bodyNeeded && req.ContentLength != 0 {
		return "the request has a body, which a provider verifies and the shadow copy has not"
	}
	if len(r.tokens) == 0 {
		return ""
	}
	if r.sessions && len(req.Header["Cookie"]) > 0 {
		return "the request may carry a session, which the candidate could refresh at the issuer"
	}
	if !r.tokensComparable && r.carriesToken(req) {
		return "the request carries a token the candidate would verify at an issuer"
	}
	return ""
}

// carriesToken says whether req carries a token an oidc or keycloak provider of either policy
// reads: a bearer Authorization, or its header, query parameter or cookie.
func (r *shadowRules) carriesToken(req *http.Request) bool {
	if a := req.Header.Get("Authorization"); len(a) > 7 && strings.EqualFold(a[:7], "bearer ") {
		return true
	}
	for _, d := range r.tokens {
		if d.Header != "" && req.Header.Get(d.Header) != "" {
			return true
		}
		if d.Query != "" && req.URL.Query().Has(d.Query) {
			return true
		}
		if d.Cookie != "" {
			if _, err := req.Cookie(d.Cookie); err == nil {
				return true
			}
		}
	}
	return false
}

// SetShadow has s decide a copy of every request served from now on; nil stops it.
func (g *Gateway) SetShadow(s *Shadow) { g.shadow.Store(s) }
