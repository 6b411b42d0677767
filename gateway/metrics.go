package gateway

import (
	"errors"
	"runtime"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/portcullis/portcullis/gateway/upstream"
	"github.com/portcullis/portcullis/idp"
	"github.com/portcullis/portcullis/policies"
)

// Metrics are the gateway's Prometheus collectors. Labels never carry a credential: consumers
// appear by username, providers by name.
type Metrics struct {
	Registry *prometheus.Registry

	requests        *prometheus.CounterVec
	forwardAuth     *prometheus.CounterVec
	duration        *prometheus.HistogramVec
	inFlight        prometheus.Gauge
	lastReload      prometheus.Gauge
	authDecisions   *prometheus.CounterVec
	rateRejections  *prometheus.CounterVec
	rateDegradedCnt *prometheus.CounterVec
	upstream        *prometheus.HistogramVec
	upstreamConns   *prometheus.CounterVec
	reloads         *prometheus.CounterVec
	policyInfoG     *prometheus.GaugeVec
	consumersG      prometheus.Gauge
	idpCalls        *prometheus.HistogramVec
	idpCache        *prometheus.CounterVec
	redisCalls      *prometheus.HistogramVec
	redisBreaker    prometheus.Gauge
	shadow          *prometheus.CounterVec

	// statusText avoids formatting the status label on every request; auth* are the decision
	// counters resolved once.
	statusText                                          [600]string
	authGranted, authUnauth, authForbidden, authUnavail prometheus.Counter
}

// NewMetrics creates and registers the collectors on a fresh registry.
func NewMetrics() *Metrics {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	m := &Metrics{
		Registry: reg,
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "portcullis_requests_total", Help: "Requests by route, consumer and response status.",
		}, []string{"route", "consumer", "status"}),
		forwardAuth: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "portcullis_forward_auth_requests_total", Help: "Forward-auth decisions (the proxy in front asked) by route, consumer and answered status; not in portcullis_requests_total.",
		}, []string{"route", "consumer", "status"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "portcullis_request_duration_seconds",
			Help:    "Requests as the client sees them, from the gateway reading the request to its last byte written (authentication, limits and the upstream included), by route and status class (2xx, 4xx, ...).",
			Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
		}, []string{"route", "code"}),
		inFlight: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "portcullis_requests_in_flight", Help: "Requests being served now (forward-auth questions included).",
		}),
		lastReload: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "portcullis_policy_last_reload_success_timestamp_seconds", Help: "When the served policy was last loaded successfully (start-up included), Unix time.",
		}),
		authDecisions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "portcullis_auth_decisions_total", Help: "Authentication decisions: granted, unauthenticated, forbidden, unavailable.",
		}, []string{"decision"}),
		rateRejections: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "portcullis_ratelimit_rejections_total", Help: "Requests rejected by a rate limit.",
		}, []string{"route", "limit", "plugin"}),
		rateDegradedCnt: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "portcullis_ratelimit_degraded_total", Help: "Requests let through unlimited because the limit's store was unavailable (allow_degradation).",
		}, []string{"limit", "plugin"}),
		upstream: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "portcullis_upstream_duration_seconds", Help: "Time from forwarding to the upstream's response headers.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
		}, []string{"route"}),
		upstreamConns: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "portcullis_upstream_connections_total",
			Help: "Connections to plain-http upstream addresses: dialed (opened), reused (taken from the keep-alive pool), stale (found closed by the upstream when taken).",
		}, []string{"upstream", "event"}),
		reloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "portcullis_policy_reloads_total", Help: "Policy reloads by result (success, failure).",
		}, []string{"result"}),
		policyInfoG: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "portcullis_policy_info", Help: "The policy version being served (value 1).",
		}, []string{"version"}),
		consumersG: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "portcullis_consumers", Help: "Consumers in the served policy.",
		}),
		idpCalls: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "portcullis_idp_request_duration_seconds", Help: "Calls to identity providers (discovery, JWKS, introspection, UMA) by outcome.",
			Buckets: prometheus.DefBuckets,
		}, []string{"idp", "op", "outcome"}),
		idpCache: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "portcullis_idp_cache_total", Help: "Identity-provider cache lookups (tokens, introspection, UMA decisions, bcrypt) by result.",
		}, []string{"idp", "cache", "result"}),
		redisCalls: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "portcullis_redis_duration_seconds", Help: "Rate-limit calls to Redis by outcome.",
			Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25},
		}, []string{"op", "outcome"}),
		redisBreaker: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "portcullis_redis_breaker_open", Help: "1 while the Redis circuit breaker is open (rate-limit calls fail fast).",
		}),
	}
	for i := range m.statusText {
		m.statusText[i] = strconv.Itoa(i)
	}
	m.authGranted = m.authDecisions.WithLabelValues("granted")
	m.authUnauth = m.authDecisions.WithLabelValues("unauthenticated")
	m.authForbidden = m.authDecisions.WithLabelValues("forbidden")
	m.authUnavail = m.authDecisions.WithLabelValues("unavailable")
	// Series a dashboard or alert reads exist from the start, at 0, not as "no data".
	m.reloads.WithLabelValues("success")
	m.reloads.WithLabelValues("failure")
	m.lastReload.SetToCurrentTime()
	reg.MustRegister(m.requests, m.forwardAuth, m.duration, m.inFlight, m.lastReload, m.authDecisions, m.rateRejections, m.rateDegradedCnt, m.upstream, m.upstreamConns, m.reloads,
		m.policyInfoG, m.consumersG, m.idpCalls, m.idpCache, m.redisCalls, m.redisBreaker)
	return m
}

// shadowDecisions registers portcullis_shadow_decisions_total, once, with every result at 0.
func (m *Metrics) shadowDecisions() *prometheus.CounterVec {
	if m.shadow == nil {
		m.shadow = prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "portcullis_shadow_decisions_total",
			Help: "Requests also decided by the shadow (candidate) policy, by result: same or different decision (status, consumer, route, deciding step), not_comparable (the candidate could not decide it without side effects, or a limit decided), dropped (the shadow queue was full).",
		}, []string{"result"})
		for _, r := range shadowResults {
			m.shadow.WithLabelValues(r)
		}
		m.Registry.MustRegister(m.shadow)
	}
	return m.shadow
}

// BuildInfo sets portcullis_build_info{version,goversion} to 1 (call once, at start).
func (m *Metrics) BuildInfo(version string) {
	g := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "portcullis_build_info", Help: "The binary's version and Go version (value 1).",
	}, []string{"version", "goversion"})
	g.WithLabelValues(version, runtime.Version()).Set(1)
	m.Registry.MustRegister(g)
}

func (m *Metrics) status(code int) string {
	if code >= 0 && code < len(m.statusText) {
		return m.statusText[code]
	}
	return strconv.Itoa(code)
}

// request counts a proxied request; consumer is its label (compiled.consumerLabel).
func (m *Metrics) request(route, consumer string, status int) {
	m.requests.WithLabelValues(route, consumer, m.status(status)).Inc()
}

func (m *Metrics) forwardAuthDecision(route, consumer string, status int) {
	m.forwardAuth.WithLabelValues(route, consumer, m.status(status)).Inc()
}

func (m *Metrics) authDecision(err error) {
	if err == nil {
		m.authGranted.Inc()
		return
	}
	var d *idp.Denial
	var he *HTTPError
	switch {
	case errors.As(err, &he) && he.Status == 403, errors.As(err, &d) && d.Status == 403:
		m.authForbidden.Inc()
	case errors.As(err, &d):
		m.authUnauth.Inc()
	default:
		m.authUnavail.Inc()
	}
}

// routeLimit makes the rejection series of a route's own limit exist, at 0, from the moment the
// route is served: an alert on its rate sees 0 rather than "no data". (The series of consumer
// and group limits appear with their first rejection: they are per route and consumer.)
func (m *Metrics) routeLimit(route string, l *limit) {
	m.rateRejections.WithLabelValues(route, l.metricOwner, l.kind)
}

func (m *Metrics) rateRejected(route string, l *limit) {
	m.rateRejections.WithLabelValues(route, l.metricOwner, l.kind).Inc()
}

func (m *Metrics) rateDegraded(l *limit) {
	m.rateDegradedCnt.WithLabelValues(l.metricOwner, l.kind).Inc()
}

// trackedConsumers are the consumers p.Metrics gives series of their own: those it names, the
// members of the groups it names, and the routes' anonymous consumers (a handful, and telling
// anonymous traffic apart is what their series are for); all when it says all_consumers.
func trackedConsumers(p *policies.Policy) (set, bool) {
	tracked := set{}
	for _, r := range p.Routes {
		if r.Anonymous != "" {
			tracked[r.Anonymous] = true
		}
	}
	mt := p.Metrics
	if mt == nil {
		return tracked, false
	}
	for _, n := range mt.Consumers {
		tracked[n] = true
	}
	if len(mt.Groups) > 0 {
		groups := newSet(mt.Groups)
		for _, cons := range p.Consumers {
			if cons.Group != "" && groups[cons.Group] {
				tracked[cons.Username] = true
			}
		}
	}
	return tracked, mt.AllConsumers
}

// consumerLabel is the consumer label of a request's series: the username of a tracked
// consumer, "" when no consumer was identified, policies.UntrackedConsumer otherwise.
func (c *compiled) consumerLabel(consumer string) string {
	if consumer == "" || (c.allTracked || c.tracked[consumer]) && consumer != policies.UntrackedConsumer {
		return consumer
	}
	return policies.UntrackedConsumer
}

// keepsSeries reports whether consumer name of c's policy has series of its own.
func (c *compiled) keepsSeries(name string) bool {
	if c.consumerLabel(name) != name || c.snap.Consumers == nil {
		return false
	}
	_, ok := c.snap.Consumers.Consumer(name)
	return ok
}

// ownSeries lists the consumers of c whose series next no longer keeps: removed from the
// policy, or no longer tracked.
func (c *compiled) ownSeries(next *compiled) []string {
	var out []string
	if c.allTracked {
		for _, cons := range c.snap.Policy.Consumers {
			if !next.keepsSeries(cons.Username) {
				out = append(out, cons.Username)
			}
		}
		return out
	}
	for name := range c.tracked {
		if !next.keepsSeries(name) {
			out = append(out, name)
		}
	}
	return out
}

// forgetConsumers deletes the series of consumers that have no series of their own any more.
func (m *Metrics) forgetConsumers(names []string) {
	for _, n := range names {
		if n == policies.UntrackedConsumer {
			continue
		}
		m.requests.DeletePartialMatch(prometheus.Labels{"consumer": n})
		m.forwardAuth.DeletePartialMatch(prometheus.Labels{"consumer": n})
		m.rateRejections.DeletePartialMatch(prometheus.Labels{"limit": "consumer:" + n})
		m.rateDegradedCnt.DeletePartialMatch(prometheus.Labels{"limit": "consumer:" + n})
	}
}

// upstreamObserver is resolved once per route at compile time.
func (m *Metrics) upstreamObserver(route string) prometheus.Observer {
	return m.upstream.WithLabelValues(route)
}

// poolCounters resolves the connection counters of one upstream address, once, when its pool
// is made: the request path only increments them.
func (m *Metrics) poolCounters(addr string) upstream.Counters {
	return upstream.Counters{
		Dialed: m.upstreamConns.WithLabelValues(addr, "dialed"),
		Reused: m.upstreamConns.WithLabelValues(addr, "reused"),
		Stale:  m.upstreamConns.WithLabelValues(addr, "stale"),
	}
}

// forgetUpstream drops the series of an address the policy no longer names.
func (m *Metrics) forgetUpstream(addr string) {
	m.upstreamConns.DeletePartialMatch(prometheus.Labels{"upstream": addr})
}

// certificateExpiry reports the listener certificate's expiry, read at each scrape.
func (m *Metrics) certificateExpiry(notAfter func() time.Time) {
	m.Registry.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "portcullis_tls_certificate_expiry_timestamp_seconds",
		Help: "When the certificate the listener serves expires (Unix time).",
	}, func() float64 {
		if t := notAfter(); !t.IsZero() {
			return float64(t.Unix())
		}
		return 0
	}))
}

// Reload counts a reload attempt.
func (m *Metrics) Reload(err error) {
	if err != nil {
		m.reloads.WithLabelValues("failure").Inc()
		return
	}
	m.reloads.WithLabelValues("success").Inc()
	m.lastReload.SetToCurrentTime()
}

// statusClass is the code label of the duration histogram: "2xx"…"5xx", bounded.
func statusClass(code int) string {
	switch {
	case code >= 100 && code < 200:
		return "1xx"
	case code < 300:
		return "2xx"
	case code < 400:
		return "3xx"
	case code < 500:
		return "4xx"
	}
	return "5xx"
}

func (m *Metrics) observeDuration(route string, status int, d time.Duration) {
	m.duration.WithLabelValues(route, statusClass(status)).Observe(d.Seconds())
}

func (m *Metrics) policyInfo(s *policies.Snapshot) {
	m.policyInfoG.Reset()
	m.policyInfoG.WithLabelValues(s.Version).Set(1)
	if s.Consumers != nil {
		m.consumersG.Set(float64(s.Consumers.Len()))
	}
}

// IdPCall records a call to an identity provider (hook for providers).
func (m *Metrics) IdPCall(provider, op string, d time.Duration, err error) {
	outcome := "ok"
	if err != nil {
		outcome = "error"
	}
	m.idpCalls.WithLabelValues(provider, op, outcome).Observe(d.Seconds())
}

// IdPCache records a provider cache lookup (hook for providers).
func (m *Metrics) IdPCache(provider, cache string, hit bool) {
	result := "miss"
	if hit {
		result = "hit"
	}
	m.idpCache.WithLabelValues(provider, cache, result).Inc()
}

// RedisCall records a rate-limit call to Redis (hook for the limiter registry).
func (m *Metrics) RedisCall(op string, d time.Duration, err error) {
	outcome := "ok"
	if err != nil {
		outcome = "error"
	}
	m.redisCalls.WithLabelValues(op, outcome).Observe(d.Seconds())
}

// RedisBreaker records the Redis circuit breaker opening and closing.
func (m *Metrics) RedisBreaker(open bool) {
	v := 0.0
	if open {
		v = 1
	}
	m.redisBreaker.Set(v)
}
