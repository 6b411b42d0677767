package policies

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"runtime/debug"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/portcullis/portcullis/consumers"
	"github.com/portcullis/portcullis/idp"
	"github.com/portcullis/portcullis/idp/local"
	"github.com/portcullis/portcullis/internal/urlpath"
	"github.com/portcullis/portcullis/keycloak"
	"github.com/portcullis/portcullis/tlscert"
)

// Defaults filled into a loaded policy.
const (
	DefaultListen          = "127.0.0.1:9080"
	DefaultAdminListen     = "127.0.0.1:9091"
	DefaultRejectedCode    = http.StatusTooManyRequests
	DefaultUpstreamTimeout = 30 * time.Second
	DefaultClientTimeout   = 60 * time.Second // client_body_timeout and send_timeout
	DefaultClockSkew       = 300
	// DefaultForwardAuthPath is forward_auth's path: under /.portcullis/, a prefix no
	// application uses, so that the endpoint never hides a route.
	DefaultForwardAuthPath = "/.portcullis/auth"
)

// Load reads the policy at path (a file, or a folder whose *.json files are merged),
// validates it, substitutes secrets, builds its providers and compiles it into a Snapshot.
// On failure the error is an errors.Join of *Error values, one per problem found; see Errors.
func Load(path string, opts Options) (*Snapshot, error) {
	return load(path, opts.withDefaults(), loadMode{})
}

// Validate runs every check of Load without side effects: providers are built (their
// constructors do no I/O), used to compile the bindings, and closed again; nothing is started.
func Validate(path string, opts Options) error {
	_, err := Check(path, opts)
	return err
}

// Check is Validate that also returns the warnings of a policy that loads: what is valid but
// most likely a mistake (see Snapshot.Warnings).
func Check(path string, opts Options) ([]*Error, error) {
	snap, err := load(path, opts.withDefaults(), loadMode{validateOnly: true})
	if err != nil {
		return nil, err
	}
	return snap.Warnings, snap.Close()
}

func (o Options) withDefaults() Options {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.LookupEnv == nil {
		o.LookupEnv = os.LookupEnv
	}
	if o.ReadFile == nil {
		o.ReadFile = func(path string) ([]byte, error) { return readRegular(path, MaxSecretFileSize) }
	}
	if o.MaxFileSize <= 0 {
		o.MaxFileSize = DefaultMaxFileSize
	}
	if o.HTTPClient == nil {
		o.HTTPClient = &http.Client{Timeout: 10 * time.Second}
	}
	if o.Context == nil {
		o.Context = context.Background()
	}
	return o
}

// loadMode tells load what to do besides loading.
type loadMode struct {
	// validateOnly builds providers only to compile the bindings (Validate).
	validateOnly bool
	// slowConsumers disables the fast consumer decoder, for tests that compare both ways.
	slowConsumers bool
}

func load(path string, opts Options, mode loadMode) (snap *Snapshot, err error) {
	// The last line of defence: a panic in any check or constructor (a library's, on input no
	// check foresaw) is a failed load, never a dead process. What it built is not closed.
	defer func() {
		if r := recover(); r != nil {
			opts.Logger.Error("panic while loading the policy", "path", path, "panic", fmt.Sprint(r), "stack", string(debug.Stack()))
			snap, err = nil, errors.Join(&Error{File: path, Msg: fmt.Sprintf("internal error while loading the policy (a bug; please report it): %v", r)})
		}
	}()
	var errs errorList
	srcs, err := readSources(path, opts.MaxFileSize)
	if err != nil {
		return nil, err
	}
	sch, err := compiledSchemas()
	if err != nil {
		return nil, err
	}

	// Stage 1, per file: syntax, schema, secrets. Later stages would only restate these
	// problems in confusing ways, so they stop here.
	res := &resolver{lookupEnv: opts.LookupEnv, readFile: opts.ReadFile}
	files := make([]*file, 0, len(srcs))
	for _, f := range srcs {
		fl, err := readFile(f, sch, res, mode.slowConsumers, &errs)
		if err != nil {
			return nil, err
		}
		if fl != nil {
			files = append(files, fl)
		}
	}
	if err := errs.err(); err != nil {
		return nil, err
	}

	// Stage 2: decode, merge, semantic checks, building and compiling.
	m := &merged{}
	for _, fl := range files {
		p, masks, derr := fl.decode(res)
		if derr != nil {
			errs.add(derr)
			continue
		}
		m.add(fl.src, p, masks)
	}
	if err := errs.err(); err != nil {
		return nil, err
	}
	m.policy.applyDefaults()
	m.check(&errs)
	snap = m.compile(&errs, buildEnv{
		ctx:          opts.Context,
		logger:       opts.Logger,
		httpClient:   opts.HTTPClient,
		issuers:      issuersOf(m.policy.IdPs),
		idps:         m.policy.IdPs,
		validateOnly: mode.validateOnly,
		hooks:        opts.Hooks,
		revocations:  opts.SessionRevocations,
		sessionStore: opts.SessionStore,
	})
	if err := errs.err(); err != nil {
		if cerr := snap.Close(); cerr != nil {
			opts.Logger.Warn("closing providers of a rejected policy", "error", cerr)
		}
		return nil, err
	}
	snap.Version = version(srcs)
	snap.Source = path
	snap.LoadedAt = time.Now()
	snap.Warnings = append(warnings(path, &m.policy), m.warnings...)
	return snap, nil
}

// warnings lists what is valid in p, loaded from path, but most likely a mistake.
func warnings(path string, p *Policy) []*Error {
	var out []*Error
	if len(p.Routes) == 0 {
		out = append(out, &Error{File: path, Msg: "the policy has no routes: every request is answered 404"})
	}
	for i, d := range p.IdPs {
		if d.Type == "hmac-auth" && d.Compat == local.HMACCompatAPISIXLoose && d.NonceHeader == "" {
			out = append(out, &Error{File: path, Path: fmt.Sprintf("$.idps[%d].compat", i),
				Msg: fmt.Sprintf(`idp %q accepts signatures that do not cover @request-target, the date or digest ("compat": "apisix-loose") and has no nonce_header: a captured request can be replayed`, d.Name)})
		}
	}
	out = append(out, shadowedRoutes(path, p.Routes)...)
	for i, r := range p.Routes {
		if r.StripPrefix == "" || len(r.Paths) == 0 {
			continue
		}
		prefix := strings.TrimSuffix(r.StripPrefix, "/")
		starts := false
		for _, tpl := range r.Paths {
			lit, _, _ := strings.Cut(tpl, "{") // the template's literal start
			if strings.HasPrefix(lit, prefix) || strings.HasPrefix(prefix, lit) && strings.Contains(tpl, "{") {
				starts = true
				break
			}
		}
		if !starts {
			out = append(out, &Error{File: path, Path: fmt.Sprintf("$.routes[%d].strip_prefix", i),
				Msg: fmt.Sprintf("route %q strips %q, which none of its paths starts with: nothing is stripped", r.Name, r.StripPrefix)})
		}
	}
	return append(out, forwardAuthWarnings(path, p)...)
}

// shadowedRoutes warns about a path template that an earlier route already has for all the
// later one's hosts and methods: routes are tried in policy order, so the later one never gets
// it.
func shadowedRoutes(path string, routes []Route) []*Error {
	// covered: every value of later is one of earlier's; an empty list is every value.
	covered := func(earlier, later []string) bool {
		if len(earlier) == 0 {
			return true
		}
		return len(later) > 0 && !slices.ContainsFunc(later, func(v string) bool {
			return !slices.ContainsFunc(earlier, func(e string) bool { return strings.EqualFold(e, v) })
		})
	}
	var out []*Error
	for j, later := range routes {
		for _, tpl := range later.Paths {
			for _, earlier := range routes[:j] {
				if slices.Contains(earlier.Paths, tpl) && covered(earlier.Hosts, later.Hosts) && covered(earlier.Methods, later.Methods) {
					out = append(out, &Error{File: path, Path: fmt.Sprintf("$.routes[%d].paths", j),
						Msg: fmt.Sprintf("route %q's path %q is route %q's too, for the same hosts and methods: routes are tried in policy order, so %q never gets it", later.Name, tpl, earlier.Name, later.Name)})
					break
				}
			}
		}
	}
	return out
}

// forwardAuthWarnings: on a route only forward auth decides, the proxy in front forwards the
// client's request itself. nginx auth_request and Caddy forward_auth send the endpoint no body,
// so an hmac-auth provider that validates the body refuses every request that has one (unless
// the proxy sends it, as Envoy ext_authz with_request_body); and hide_credentials cannot remove
// what the proxy forwards.
func forwardAuthWarnings(path string, p *Policy) []*Error {
	if p.ForwardAuth == nil {
		return nil
	}
	byName := map[string]*IdP{}
	for i := range p.IdPs {
		byName[p.IdPs[i].Name] = &p.IdPs[i]
	}
	var out []*Error
	for i, r := range p.Routes {
		if len(r.Upstream.Targets) > 0 {
			continue
		}
		warned := map[string]bool{}
		warn := func(name, msg string) {
			if !warned[name] {
				warned[name] = true
				out = append(out, &Error{File: path, Path: fmt.Sprintf("$.routes[%d]", i), Msg: msg})
			}
		}
		for _, cons := range p.Consumers {
			if !r.admits(cons.Username, cons.Group) {
				continue
			}
			for _, b := range cons.IdPs {
				d := byName[b.IdP]
				switch {
				case d == nil:
				case d.Type == "hmac-auth" && d.ValidateRequestBody:
					warn(d.Name, fmt.Sprintf("route %q is decided only by forward auth, and idp %q validates the request body (validate_request_body): nginx auth_request and Caddy forward_auth send no body, so a request with one is refused; only Envoy ext_authz with with_request_body sends it", r.Name, d.Name))
				case d.HideCredentials:
					warn(d.Name, fmt.Sprintf("route %q is decided only by forward auth, where idp %q cannot hide_credentials: the proxy in front forwards the client's request; remove the credential there", r.Name, d.Name))
				}
			}
		}
	}
	return out
}

// admits reports whether the route's allow and deny lists let the consumer in.
func (r *Route) admits(consumer, group string) bool {
	in := func(list []string, name string) bool { return name != "" && slices.Contains(list, name) }
	if r.Consumers != nil && in(r.Consumers.Deny, consumer) || r.Groups != nil && in(r.Groups.Deny, group) {
		return false
	}
	allowC := r.Consumers != nil && len(r.Consumers.Allow) > 0
	allowG := r.Groups != nil && len(r.Groups.Allow) > 0
	if !allowC && !allowG {
		return true
	}
	return allowC && in(r.Consumers.Allow, consumer) || allowG && in(r.Groups.Allow, group)
}

type rawFile struct {
	name string // as reported in errors
	base string // as hashed into the version
	data []byte
}

// readSources reads a file, or the non-hidden *.json files of a folder sorted by name. Each
// must be a regular file of at most limit bytes (see readRegular).
func readSources(path string, limit int64) ([]rawFile, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, errors.Join(&Error{File: path, Msg: "cannot read policy: " + fileErrReason(err)})
	}
	if !fi.IsDir() {
		data, err := readRegular(path, limit)
		if err != nil {
			return nil, errors.Join(&Error{File: path, Msg: "cannot read policy: " + fileErrReason(err)})
		}
		return []rawFile{{name: path, base: filepath.Base(path), data: data}}, nil
	}
	entries, err := os.ReadDir(path)
	if err != nil {
		return nil, errors.Join(&Error{File: path, Msg: "cannot read policy folder: " + fileErrReason(err)})
	}
	var files []rawFile
	var errs errorList
	for _, e := range entries {
		if !isPolicyFileName(e.Name()) {
			continue
		}
		full := filepath.Join(path, e.Name())
		// Follow symlinks (ConfigMap volumes link every file into ..data/).
		st, err := os.Stat(full)
		if err != nil {
			errs.add(&Error{File: full, Msg: "cannot read policy: " + fileErrReason(err)})
			continue
		}
		if st.IsDir() {
			continue
		}
		// A FIFO, device or socket named *.json is refused, not skipped: it is a mistake.
		data, err := readRegular(full, limit)
		if err != nil {
			errs.add(&Error{File: full, Msg: "cannot read policy: " + fileErrReason(err)})
			continue
		}
		files = append(files, rawFile{name: full, base: e.Name(), data: data})
	}
	if err := errs.err(); err != nil {
		return nil, err
	}
	if len(files) == 0 {
		return nil, errors.Join(&Error{File: path, Msg: "the folder holds no *.json policy file"})
	}
	sort.Slice(files, func(i, j int) bool { return files[i].base < files[j].base })
	return files, nil
}

// isPolicyFileName reports whether a folder entry is one of the policy's files.
func isPolicyFileName(name string) bool {
	return !strings.HasPrefix(name, ".") && strings.HasSuffix(name, ".json")
}

// version hashes the (file name, content) pairs.
func version(files []rawFile) string {
	h := sha256.New()
	var n [8]byte
	for _, f := range files {
		for _, b := range [][]byte{[]byte(f.base), f.data} {
			binary.BigEndian.PutUint64(n[:], uint64(len(b)))
			h.Write(n[:])
			h.Write(b)
		}
	}
	return hex.EncodeToString(h.Sum(nil))[:12]
}

// origin is where a merged element was written.
type origin struct {
	src  *source
	path jsonPath
}

func (o origin) at(sub jsonPath) jsonPath { return o.path + sub[len(rootPath):] }

func (o origin) errAt(sub jsonPath, format string, args ...any) *Error {
	return o.src.errAt(o.at(sub), format, args...)
}

func (o origin) errAtKey(sub jsonPath, format string, args ...any) *Error {
	return o.src.errAtKey(o.at(sub), format, args...)
}

// consumerSpan tells that the merged consumers from start on (up to the next span) came from
// src, in order.
type consumerSpan struct {
	src   *source
	start int
}

// merged is the policy of all files with where each part came from.
type merged struct {
	policy                                                                Policy
	listen, adminListen, redis, trustedProxies, tls, forwardAuth, metrics *origin
	idps, groups, routes                                                  []origin
	// consumerSpans locate the consumers; their paths are only formatted for an error.
	consumerSpans []consumerSpan
	// masks are the binding fields present (bindingField bits) of the consumers, by merged
	// index, where the typed binding cannot tell (see file.decode).
	masks map[int][]uint32
	// conflicts are top-level values set by two files.
	conflicts []*Error
	checker   *checker
	// warnings are what compiling found valid but weak (see idp.Warner).
	warnings []*Error
}

// consumerOrigin is where merged consumer i was written.
func (m *merged) consumerOrigin(i int) origin {
	k := sort.Search(len(m.consumerSpans), func(k int) bool { return m.consumerSpans[k].start > i }) - 1
	sp := m.consumerSpans[k]
	return origin{src: sp.src, path: rootPath.key("consumers").index(i - sp.start)}
}

// add merges one decoded file: arrays are concatenated, a top-level value may be set by one
// file only.
func (m *merged) add(src *source, p Policy, masks map[int][]uint32) {
	top := func(key string, set bool, dst **origin, apply func()) {
		if !set {
			return
		}
		here := origin{src: src, path: rootPath.key(key)}
		if *dst != nil {
			prev := *dst
			// Reported through the join below; merge stays on the first value.
			m.conflicts = append(m.conflicts, src.errAt(here.path, "%q is already set in %s", key, prev.src.where(prev.path)))
			return
		}
		*dst = &here
		apply()
	}
	top("listen", p.Listen != "", &m.listen, func() { m.policy.Listen = p.Listen })
	top("admin_listen", p.AdminListen != "", &m.adminListen, func() { m.policy.AdminListen = p.AdminListen })
	top("redis", p.Redis != nil, &m.redis, func() { m.policy.Redis = p.Redis })
	top("tls", p.TLS != nil, &m.tls, func() { m.policy.TLS = p.TLS })
	top("forward_auth", p.ForwardAuth != nil, &m.forwardAuth, func() { m.policy.ForwardAuth = p.ForwardAuth })
	top("metrics", p.Metrics != nil, &m.metrics, func() { m.policy.Metrics = p.Metrics })
	top("trusted_proxies", len(p.TrustedProxies) > 0, &m.trustedProxies, func() { m.policy.TrustedProxies = p.TrustedProxies })

	list := func(key string, n int, dst *[]origin) {
		for i := 0; i < n; i++ {
			*dst = append(*dst, origin{src: src, path: rootPath.key(key).index(i)})
		}
	}
	list("idps", len(p.IdPs), &m.idps)
	list("consumer_groups", len(p.ConsumerGroups), &m.groups)
	list("routes", len(p.Routes), &m.routes)
	m.policy.IdPs = append(m.policy.IdPs, p.IdPs...)
	m.policy.ConsumerGroups = append(m.policy.ConsumerGroups, p.ConsumerGroups...)
	m.policy.Routes = append(m.policy.Routes, p.Routes...)

	start := len(m.policy.Consumers)
	if len(p.Consumers) > 0 {
		m.consumerSpans = append(m.consumerSpans, consumerSpan{src: src, start: start})
	}
	if start == 0 {
		// The usual single file: no copy of a large array.
		m.policy.Consumers = p.Consumers
	} else {
		m.policy.Consumers = append(m.policy.Consumers, p.Consumers...)
	}
	for i, mk := range masks {
		if m.masks == nil {
			m.masks = map[int][]uint32{}
		}
		m.masks[start+i] = mk
	}
}

// applyDefaults fills what the policy leaves out.
func (p *Policy) applyDefaults() {
	if p.Listen == "" {
		p.Listen = DefaultListen
	}
	if p.AdminListen == "" {
		p.AdminListen = DefaultAdminListen
	}
	if p.ForwardAuth != nil && p.ForwardAuth.Path == "" {
		p.ForwardAuth.Path = DefaultForwardAuthPath
	}
	for i := range p.IdPs {
		if p.IdPs[i].Type == "hmac-auth" && p.IdPs[i].ClockSkew == nil {
			v := DefaultClockSkew
			p.IdPs[i].ClockSkew = &v
		}
	}
	for i := range p.ConsumerGroups {
		p.ConsumerGroups[i].Plugins.applyDefaults("consumer")
	}
	for i := range p.Consumers {
		p.Consumers[i].Plugins.applyDefaults("consumer")
	}
	for i := range p.Routes {
		r := &p.Routes[i]
		r.Plugins.applyDefaults("route")
		if r.Upstream.Timeout == 0 {
			r.Upstream.Timeout = Duration(DefaultUpstreamTimeout)
		}
		if r.Upstream.ClientBodyTimeout == 0 {
			r.Upstream.ClientBodyTimeout = Duration(DefaultClientTimeout)
		}
		if r.Upstream.SendTimeout == 0 {
			r.Upstream.SendTimeout = Duration(DefaultClientTimeout)
		}
		for j := range r.Upstream.Targets {
			if r.Upstream.Targets[j].Weight == 0 {
				r.Upstream.Targets[j].Weight = 1
			}
		}
	}
}

func (pl *Plugins) applyDefaults(key string) {
	if lc := pl.LimitCount; lc != nil {
		if lc.Key == "" {
			lc.Key = key
		}
		if lc.Policy == "" {
			lc.Policy = "local"
		}
		if lc.WindowType == "" {
			lc.WindowType = "fixed"
		}
		if lc.RejectedCode == 0 {
			lc.RejectedCode = DefaultRejectedCode
		}
	}
	if lr := pl.LimitReq; lr != nil {
		if lr.Key == "" {
			lr.Key = key
		}
		if lr.Policy == "" {
			lr.Policy = "local"
		}
		if lr.RejectedCode == 0 {
			// APISIX's limit-req answers 503 by default, limit-count 429.
			lr.RejectedCode = http.StatusServiceUnavailable
		}
	}
}

// bindingFields are the binding fields each provider type reads, and which it requires.
var bindingFields = map[string]struct {
	allowed  []string
	required []string
}{
	"key-auth":   {allowed: []string{"key"}, required: []string{"key"}},
	"basic-auth": {allowed: []string{"username", "password"}, required: []string{"username", "password"}},
	"jwt-auth":   {allowed: []string{"key", "secret", "public_key", "algorithm"}, required: []string{"key"}},
	"hmac-auth":  {allowed: []string{"key_id", "secret"}, required: []string{"key_id", "secret"}},
	// Without subject, a token binding is claim-matched (idp.ClaimMatched).
	"oidc":     {allowed: tokenBindingFields},
	"keycloak": {allowed: tokenBindingFields},
}

var tokenBindingFields = []string{"subject", "claims", "scopes", "realm_roles", "client_roles", "groups", "permissions"}

// bindingRules is bindingFields as masks, so that checking a binding allocates nothing.
type bindingRules struct{ allowed, required uint32 }

func rulesOf(typ string) (bindingRules, bool) {
	f, ok := bindingFields[typ]
	if !ok {
		return bindingRules{}, false
	}
	r := bindingRules{allowed: fieldIdP | fieldID}
	for _, n := range f.allowed {
		r.allowed |= bindingFieldBit(n)
	}
	for _, n := range f.required {
		r.required |= bindingFieldBit(n)
	}
	return r, true
}

// checker holds the name indexes of the semantic pass.
type checker struct {
	idpByName      map[string]int
	groupByName    map[string]int
	consumerByName map[string]int
	// badBinding holds consumer i's binding j ({i, j}) when it names an unknown idp, repeats
	// one, or has invalid fields: it is not compiled. Nil when there is none.
	badBinding map[[2]int]bool
	// skipConsumer marks consumers not to compile (duplicates).
	skipConsumer map[int]bool
}

// check runs the semantic checks that need no provider.
func (m *merged) check(errs *errorList) {
	for _, e := range m.conflicts {
		errs.add(e)
	}
	p := &m.policy
	if m.listen != nil {
		checkAddress(*m.listen, p.Listen, errs)
	}
	if m.adminListen != nil {
		checkAddress(*m.adminListen, p.AdminListen, errs)
	}
	for i, s := range p.TrustedProxies {
		if _, err := ParseTrustedProxy(s); err != nil {
			errs.add(m.trustedProxies.src.errAt(m.trustedProxies.path.index(i), "%v", err))
		}
	}
	m.checkForwardAuth(errs)
	for i, d := range p.IdPs {
		if d.Session != nil && d.Session.Store == "redis" && p.Redis == nil {
			errs.add(m.idps[i].errAt(rootPath.key("session").key("store"), "session store \"redis\" needs the policy's redis block"))
		}
	}
	if m.redis != nil && (p.Redis.Addr == "") == (len(p.Redis.Addrs) == 0) {
		errs.add(m.redis.src.errAt(m.redis.path, "redis needs exactly one of addr (one server) or addrs (a cluster)"))
	}

	listOrigin := func(list []origin) func(int) origin { return func(i int) origin { return list[i] } }
	c := &checker{}
	c.idpByName = uniqueNames(len(p.IdPs), func(i int) string { return p.IdPs[i].Name }, listOrigin(m.idps), "name", "idp", errs, nil)
	c.groupByName = uniqueNames(len(p.ConsumerGroups), func(i int) string { return p.ConsumerGroups[i].Name }, listOrigin(m.groups), "name", "consumer group", errs, nil)
	var dupConsumers []int
	c.consumerByName = uniqueNames(len(p.Consumers), func(i int) string { return p.Consumers[i].Username }, m.consumerOrigin, "username", "consumer", errs, &dupConsumers)
	for _, i := range dupConsumers {
		if c.skipConsumer == nil {
			c.skipConsumer = map[int]bool{}
		}
		c.skipConsumer[i] = true
	}
	uniqueNames(len(p.Routes), func(i int) string { return p.Routes[i].Name }, listOrigin(m.routes), "name", "route", errs, nil)

	anonymous := map[string]bool{}
	for _, r := range p.Routes {
		if r.Anonymous != "" {
			anonymous[r.Anonymous] = true
		}
	}

	for i, g := range p.ConsumerGroups {
		m.checkPlugins(func() origin { return m.groups[i] }, g.Plugins, errs)
	}
	for i, d := range p.IdPs {
		if idp.IsIdentityHeader(d.Header) {
			errs.add(m.idps[i].errAt(rootPath.key("header"),
				"header %q is reserved: the gateway drops it from every request so that clients cannot claim an identity", d.Header))
		}
	}

	rules := make([]bindingRules, len(p.IdPs))
	hasRules := make([]bool, len(p.IdPs))
	for k, cfg := range p.IdPs {
		rules[k], hasRules[k] = rulesOf(cfg.Type)
	}
	for i := range p.Consumers {
		m.checkConsumer(i, c, rules, hasRules, anonymous, errs)
	}

	for i, r := range p.Routes {
		m.checkRoute(m.routes[i], r, c, errs)
		if len(r.Upstream.Targets) == 0 && p.ForwardAuth == nil {
			errs.add(m.routes[i].errAt(rootPath.key("upstream"), "route %q has no upstream: only a route decided by forward auth (with forward_auth set) may have none", r.Name))
		}
	}
	m.checkMetrics(c, errs)
	m.checker = c
}

// checkConsumer checks consumer i: its group, that it has bindings, and each binding's idp and
// fields. A binding found bad is marked in c, so that compiling skips it (its error is reported).
func (m *merged) checkConsumer(i int, c *checker, rules []bindingRules, hasRules []bool, anonymous map[string]bool, errs *errorList) {
	p := &m.policy
	cons := &p.Consumers[i]
	if cons.Group != "" {
		if _, ok := c.groupByName[cons.Group]; !ok {
			errs.add(m.consumerOrigin(i).errAt("$.group", "unknown consumer group %q%s", cons.Group, didYouMean(cons.Group, namesOf(c.groupByName))))
		}
	}
	if len(cons.IdPs) == 0 && !anonymous[cons.Username] {
		sub := jsonPath("$.username")
		// "idps": [] decodes to an empty, non-nil slice.
		if cons.IdPs != nil {
			sub = "$.idps"
		}
		errs.add(m.consumerOrigin(i).errAt(sub, "consumer %q has no idps: a consumer needs at least one binding (only a route's anonymous_consumer may have none)", cons.Username))
	}
	masks := m.masks[i]
	for j := range cons.IdPs {
		b := &cons.IdPs[j]
		k, known := c.idpByName[b.IdP]
		if !known {
			errs.add(m.consumerOrigin(i).errAt(rootPath.key("idps").index(j).key("idp"), "unknown idp %q%s", b.IdP, didYouMean(b.IdP, namesOf(c.idpByName))))
			c.markBad(i, j)
			continue
		}
		first := -1
		for jj := 0; jj < j; jj++ {
			if cons.IdPs[jj].IdP == b.IdP {
				first = jj
				break
			}
		}
		if first >= 0 {
			o := m.consumerOrigin(i)
			errs.add(o.errAt(rootPath.key("idps").index(j).key("idp"), "consumer %q binds idp %q twice (first at %s)", cons.Username, b.IdP, o.src.where(o.at(rootPath.key("idps").index(first)))))
			c.markBad(i, j)
			continue
		}
		mask := b.fieldMask()
		if masks != nil {
			mask = masks[j]
		}
		if b.ID != "" && !validCredentialID(b.ID) {
			errs.add(m.consumerOrigin(i).errAt(rootPath.key("idps").index(j).key("id"), "id must be 1 to %d visible ASCII characters without spaces: it is sent as the X-Credential-Identifier header", maxCredentialID))
		}
		r := rules[k]
		if !hasRules[k] || mask&^r.allowed != 0 || r.required&^mask != 0 || (p.IdPs[k].Type == "jwt-auth" && (mask&fieldSecret != 0) == (mask&fieldPublicKey != 0)) {
			checkBindingFields(m.consumerOrigin(i), rootPath.key("idps").index(j), mask, p.IdPs[k].Type, b.IdP, errs)
			c.markBad(i, j)
		}
	}
	m.checkPlugins(func() origin { return m.consumerOrigin(i) }, cons.Plugins, errs)
}

// markBad records that consumer i's binding j has an error reported.
func (c *checker) markBad(i, j int) {
	if c.badBinding == nil {
		c.badBinding = map[[2]int]bool{}
	}
	c.badBinding[[2]int{i, j}] = true
}

// checkMetrics checks that metrics names consumers and groups of the policy, as a route's
// access lists must.
func (m *merged) checkMetrics(c *checker, errs *errorList) {
	mt := m.policy.Metrics
	if mt == nil {
		return
	}
	o := *m.metrics
	for i, n := range mt.Consumers {
		at := rootPath.key("consumers").index(i)
		if _, ok := c.consumerByName[n]; !ok {
			errs.add(o.errAt(at, "unknown consumer %q%s", n, didYouMean(n, namesOf(c.consumerByName))))
		} else if n == UntrackedConsumer {
			errs.add(o.errAt(at, "consumer %q cannot be tracked: %q is the consumer label of the untracked consumers", n, n))
		}
	}
	for i, n := range mt.Groups {
		if _, ok := c.groupByName[n]; !ok {
			errs.add(o.errAt(rootPath.key("consumer_groups").index(i), "unknown consumer group %q%s", n, didYouMean(n, namesOf(c.groupByName))))
		}
	}
}

// checkForwardAuth checks forward_auth: a path of its own, and someone allowed to ask.
func (m *merged) checkForwardAuth(errs *errorList) {
	fa := m.policy.ForwardAuth
	if fa == nil {
		return
	}
	o := *m.forwardAuth
	if norm, _, err := urlpath.Normalize(fa.Path); err != nil || norm != fa.Path {
		errs.add(o.errAt(rootPath.key("path"), "forward_auth path %q is not a normalised path (no \".\" or \"..\" segments): requests are matched on their normalised path", fa.Path))
	}
	for i, s := range fa.Allow {
		if _, err := ParseTrustedProxy(s); err != nil {
			errs.add(o.errAt(rootPath.key("allow").index(i), "%v", err))
		}
	}
	if len(fa.Allow) == 0 && len(m.policy.TrustedProxies) == 0 {
		errs.add(o.errAt(rootPath, "forward_auth needs allow or trusted_proxies: only the proxies in front may ask, or anyone could probe credentials and spend others' limits through it"))
	}
}

// ParseTrustedProxy reads one trusted_proxies entry: an IP address (one host) or a CIDR prefix.
func ParseTrustedProxy(s string) (netip.Prefix, error) {
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return netip.Prefix{}, fmt.Errorf("trusted proxy %q is not a CIDR prefix (10.0.0.0/8, fd00::/8)", s)
		}
		return p.Masked(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("trusted proxy %q is not an IP address or a CIDR prefix", s)
	}
	a = a.Unmap()
	return netip.PrefixFrom(a, a.BitLen()), nil
}

func checkAddress(o origin, addr string, errs *errorList) {
	if _, _, err := net.SplitHostPort(addr); err != nil {
		errs.add(o.src.errAt(o.path, "invalid address %q: want host:port", addr))
	}
}

// uniqueNames indexes names and reports each repetition at the later one; dups, if not nil,
// receives the indexes of the repetitions.
func uniqueNames(n int, name func(int) string, originOf func(int) origin, field, what string, errs *errorList, dups *[]int) map[string]int {
	idx := make(map[string]int, n)
	for i := 0; i < n; i++ {
		nm := name(i)
		if first, dup := idx[nm]; dup {
			f := originOf(first)
			errs.add(originOf(i).errAt(rootPath.key(field), "%s %q is already defined at %s", what, nm, f.src.where(f.at(rootPath.key(field)))))
			if dups != nil {
				*dups = append(*dups, i)
			}
			continue
		}
		idx[nm] = i
	}
	return idx
}

// checkBindingFields reports what is wrong with the fields (mask) of a binding to an idp of
// type typ. It is called only for a binding that is wrong.
func checkBindingFields(o origin, bp jsonPath, mask uint32, typ, idpName string, errs *errorList) {
	rules, ok := rulesOf(typ)
	if !ok {
		return
	}
	// The bits follow the sorted field names.
	for i, name := range bindingFieldNames {
		if bit := uint32(1) << i; mask&bit != 0 && rules.allowed&bit == 0 {
			errs.add(o.errAtKey(bp.key(name), "field %q is not valid in a binding to idp %q of type %q", name, idpName, typ))
		}
	}
	for _, f := range bindingFields[typ].required {
		if mask&bindingFieldBit(f) == 0 {
			errs.add(o.errAt(bp, "a binding to idp %q of type %q needs %q", idpName, typ, f))
		}
	}
	if typ == "jwt-auth" && (mask&fieldSecret != 0) == (mask&fieldPublicKey != 0) {
		errs.add(o.errAt(bp, "a binding to idp %q of type %q needs exactly one of \"secret\" or \"public_key\"", idpName, typ))
	}
}

// checkPlugins checks the plugins written at the origin that at returns; at runs only for an error.
func (m *merged) checkPlugins(at func() origin, pl Plugins, errs *errorList) {
	if m.redis != nil {
		return
	}
	if pl.LimitCount != nil && pl.LimitCount.Policy == "redis" {
		errs.add(at().errAt(rootPath.key("plugins").key("limit-count").key("policy"), "policy \"redis\" needs a top-level \"redis\" block"))
	}
	if pl.LimitReq != nil && pl.LimitReq.Policy == "redis" {
		errs.add(at().errAt(rootPath.key("plugins").key("limit-req").key("policy"), "policy \"redis\" needs a top-level \"redis\" block"))
	}
}

func (m *merged) checkRoute(o origin, r Route, c *checker, errs *errorList) {
	for i, p := range r.Paths {
		at := rootPath.key("paths").index(i)
		err := CheckPathTemplate(p)
		if err == nil {
			err = checkPathNormalised(p, r.AllowEncodedSlashes)
		}
		if err != nil {
			errs.add(o.errAt(at, "%v", err))
		}
	}
	for i, h := range r.Hosts {
		if err := CheckHost(h); err != nil {
			errs.add(o.errAt(rootPath.key("hosts").index(i), "%v", err))
		}
	}
	if r.StripPrefix != "" {
		if err := checkStripPrefix(r.StripPrefix); err != nil {
			errs.add(o.errAt(rootPath.key("strip_prefix"), "%v", err))
		}
	}
	for i, t := range r.Upstream.Targets {
		at := rootPath.key("upstream").key("targets").index(i).key("url")
		u, err := url.Parse(t.URL)
		switch {
		case err != nil:
			errs.add(o.errAt(at, "invalid upstream URL: %v", errors.Unwrap(err)))
		case u.Scheme != "http" && u.Scheme != "https":
			errs.add(o.errAt(at, "upstream URL %q must be absolute http or https", t.URL))
		case u.Host == "":
			errs.add(o.errAt(at, "upstream URL %q has no host", t.URL))
		default:
			if err := checkTargetPath(u.EscapedPath()); err != nil {
				errs.add(o.errAt(at, "%v", err))
			}
		}
	}
	names := func(field string, list *AccessList, index map[string]int, what string) {
		if list == nil {
			return
		}
		for kind, l := range map[string][]string{"allow": list.Allow, "deny": list.Deny} {
			for i, n := range l {
				if _, ok := index[n]; !ok {
					errs.add(o.errAt(rootPath.key(field).key(kind).index(i), "unknown %s %q%s", what, n, didYouMean(n, namesOf(index))))
				}
			}
		}
	}
	names("consumers", r.Consumers, c.consumerByName, "consumer")
	names("consumer_groups", r.Groups, c.groupByName, "consumer group")
	if r.Anonymous != "" {
		if _, ok := c.consumerByName[r.Anonymous]; !ok {
			errs.add(o.errAt(rootPath.key("anonymous_consumer"), "unknown consumer %q%s", r.Anonymous, didYouMean(r.Anonymous, namesOf(c.consumerByName))))
		}
	}
	if r.Login != "" {
		k, ok := c.idpByName[r.Login]
		switch {
		case !ok:
			errs.add(o.errAt(rootPath.key("login"), "unknown idp %q%s", r.Login, didYouMean(r.Login, namesOf(c.idpByName))))
		case m.policy.IdPs[k].Session == nil:
			errs.add(o.errAt(rootPath.key("login"), "idp %q has no session: only a provider with a session block signs browsers in", r.Login))
		}
	}
	m.checkPlugins(func() origin { return o }, r.Plugins, errs)
}

// issuersOf lists the token issuers of the oidc and keycloak providers.
func issuersOf(idps []IdP) []string {
	var out []string
	for _, c := range idps {
		switch c.Type {
		case "oidc":
			out = append(out, c.Issuer)
		case "keycloak":
			out = append(out, keycloak.Issuer(c.URL, c.Realm))
		}
	}
	return out
}

// compile builds the providers and the consumer set. It returns a snapshot even on errors so
// that the caller can close what was built.
func (m *merged) compile(errs *errorList, env buildEnv) *Snapshot {
	p := &m.policy
	c := m.checker
	snap := &Snapshot{
		Policy:          p,
		TrustedProxies:  make([]netip.Prefix, 0, len(p.TrustedProxies)),
		ProviderByName:  make(map[string]idp.Provider, len(p.IdPs)),
		ConsumerPlugins: make(map[string]Plugins, len(p.Consumers)),
		GroupPlugins:    make(map[string]Plugins, len(p.ConsumerGroups)),
	}
	if p.TLS != nil {
		src, err := tlscert.Load(p.TLS.CertFile, p.TLS.KeyFile, tlscert.Options{Logger: env.logger})
		if err != nil {
			errs.add(m.tls.src.errAt(m.tls.path.key("cert_file"), "%v", err))
		}
		snap.TLS = src
	}
	for _, s := range p.TrustedProxies {
		if pfx, err := ParseTrustedProxy(s); err == nil { // check reported the others
			snap.TrustedProxies = append(snap.TrustedProxies, pfx)
		}
	}
	if fa := p.ForwardAuth; fa != nil {
		snap.ForwardAuth = &ForwardAuthEndpoint{Path: fa.Path}
		allow := fa.Allow
		if len(allow) == 0 {
			allow = p.TrustedProxies
		}
		for _, s := range allow {
			if pfx, err := ParseTrustedProxy(s); err == nil {
				snap.ForwardAuth.Allow = append(snap.ForwardAuth.Allow, pfx)
			}
		}
	}
	for i, cfg := range p.IdPs {
		if c.idpByName[cfg.Name] != i {
			continue // a duplicate, already reported
		}
		prov, err := buildProvider(cfg, env)
		if err != nil {
			errs.add(m.idps[i].errAt(rootPath.key("type"), "building idp %q: %v", cfg.Name, err))
			continue
		}
		snap.Providers = append(snap.Providers, prov)
		snap.ProviderByName[cfg.Name] = prov
	}

	b := consumers.NewBuilder(len(p.Consumers))
	for i, g := range p.ConsumerGroups {
		if c.groupByName[g.Name] != i {
			continue
		}
		if err := b.AddGroup(&consumers.Group{Name: g.Name}); err != nil {
			errs.add(m.groups[i].errAt(rootPath.key("name"), "%v", err))
		}
		snap.GroupPlugins[g.Name] = g.Plugins
	}
	for i := range p.Consumers {
		if c.skipConsumer[i] {
			continue
		}
		cons := &p.Consumers[i]
		cc := &consumers.Consumer{Username: cons.Username, Group: cons.Group, Chain: make([]idp.Bound, 0, len(cons.IdPs))}
		for j, bd := range cons.IdPs {
			if c.badBinding[[2]int{i, j}] {
				continue
			}
			prov, ok := snap.ProviderByName[bd.IdP]
			if !ok {
				continue // the provider failed to build, already reported
			}
			compiled, err := prov.Compile(bindingSpec(bd, cons.Username))
			if err != nil {
				errs.add(m.consumerOrigin(i).errAt(rootPath.key("idps").index(j), "idp %q rejects the binding: %v", bd.IdP, err))
				continue
			}
			if w, ok := compiled.(idp.Warner); ok {
				for _, msg := range w.Warnings() {
					m.warnings = append(m.warnings, m.consumerOrigin(i).errAt(rootPath.key("idps").index(j), "idp %q binding: %s", bd.IdP, msg))
				}
			}
			cc.Chain = append(cc.Chain, idp.Bound{Provider: prov, Binding: compiled})
		}
		if err := b.AddConsumer(cc); err != nil {
			o := m.consumerOrigin(i)
			var ce *consumers.ConflictError
			if errors.As(err, &ce) {
				// Never the credential itself: only who holds it.
				at := rootPath.key("idps")
				for j, bd := range cons.IdPs {
					// The conflicting binding is in the chain: a good binding to that idp (a
					// consumer binds each idp once).
					if bd.IdP == ce.Provider && !c.badBinding[[2]int{i, j}] {
						at = rootPath.key("idps").index(j)
						break
					}
				}
				errs.add(o.errAt(at, "credential for idp %q is already bound to consumer %q", ce.Provider, ce.Other))
			} else {
				errs.add(o.errAt(rootPath.key("username"), "%v", err))
			}
			continue
		}
		snap.ConsumerPlugins[cons.Username] = cons.Plugins
	}
	snap.Consumers = b.Build()
	snap.Chain = idp.NewChain(snap.Providers, snap.Consumers)
	return snap
}

// maxCredentialID bounds a binding's id, a header value.
const maxCredentialID = 256

// validCredentialID reports whether id can be sent as a header value as it is: visible ASCII,
// no spaces (checked after secrets are substituted, so a reference cannot smuggle a line break).
func validCredentialID(id string) bool {
	if id == "" || len(id) > maxCredentialID {
		return false
	}
	for i := 0; i < len(id); i++ {
		if id[i] < '!' || id[i] > '~' {
			return false
		}
	}
	return true
}

func bindingSpec(b Binding, consumer string) idp.BindingSpec {
	var claims map[string][]string
	if b.Claims != nil {
		claims = make(map[string][]string, len(b.Claims))
		for k, v := range b.Claims {
			claims[k] = []string(v)
		}
	}
	return idp.BindingSpec{
		IdP:         b.IdP,
		ID:          b.ID,
		Consumer:    consumer,
		Key:         b.Key,
		Username:    b.Username,
		Password:    b.Password,
		Secret:      b.Secret,
		PublicKey:   b.PublicKey,
		Algorithm:   b.Algorithm,
		KeyID:       b.KeyID,
		Subject:     b.Subject,
		Claims:      claims,
		Scopes:      b.Scopes,
		RealmRoles:  b.RealmRoles,
		ClientRoles: b.ClientRoles,
		Groups:      b.Groups,
		Permissions: b.Permissions,
	}
}
