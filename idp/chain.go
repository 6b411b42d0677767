package idp

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
)

// Index resolves credentials to consumers. The consumers package implements it.
type Index interface {
	// Resolve returns the consumer and the binding that claim lookup for the named provider,
	// or ok=false when no consumer does.
	Resolve(provider, lookup string) (consumer string, b Binding, ok bool)
	// Chain returns the consumer's bindings in their policy order; nil for an unknown consumer.
	Chain(consumer string) []Bound
}

// ClaimIndex is implemented by an Index that holds claim-matched bindings (see ClaimMatched).
type ClaimIndex interface {
	// Matching returns the claim-matched bindings of the named provider, in policy order; nil
	// when it has none.
	Matching(provider string) []Candidate
}

// Candidate is one claim-matched binding and its consumer.
type Candidate struct {
	Consumer string
	Binding  Binding
}

// Bound is one entry of a consumer's chain.
type Bound struct {
	Provider Provider
	Binding  Binding
}

// Chain evaluates the chain rule over a fixed, ordered set of providers.
type Chain struct {
	providers []Provider
	index     Index
	// peekers[i] is providers[i] as a Peeker when another provider of its type is a Peeker too:
	// only then can a credential in its place be another provider's. Nil when no type is shared,
	// so that the usual policy pays nothing.
	peekers []Peeker
	// observer, when set, is told about every provider call (SetObserver).
	observer Observer
}

// Observer is told about each call the chain makes to a provider, so that the caller can time
// and trace them (the gateway's tracing spans). It sees which provider was called and how the
// call ended, never the credential. Its methods run on the request path, concurrently, and must
// not block.
type Observer interface {
	// ProviderStart is called before the chain calls p; op says which call. The context it
	// returns is the one p is given, so that what p does (its calls to an IdP) is seen as part
	// of this call.
	ProviderStart(ctx context.Context, p Provider, op Op) context.Context
	// ProviderEnd is called when the call returned, with ProviderStart's context. present says
	// that Extract found a credential (always true for Verify); err is what p returned: nil, a
	// *Denial, or the error of a provider that could not decide.
	ProviderEnd(ctx context.Context, p Provider, op Op, present bool, err error)
}

// Op is a call the chain makes to a provider.
type Op uint8

// The calls: Extract, Verify of the consumer's binding, and Verify of a claim-matched candidate.
const (
	OpExtract Op = iota
	OpVerify
	OpMatch
)

func (o Op) String() string {
	switch o {
	case OpExtract:
		return "extract"
	case OpVerify:
		return "verify"
	case OpMatch:
		return "match"
	}
	return "unknown"
}

// SetObserver makes the chain tell o about each provider call; nil stops it. It must be called
// before the chain evaluates requests: it is not synchronised with Evaluate.
func (c *Chain) SetObserver(o Observer) { c.observer = o }

// extract is p.Extract, observed.
func (c *Chain) extract(ctx context.Context, r *http.Request, p Provider) (*Credential, error) {
	if c.observer == nil {
		return p.Extract(ctx, r)
	}
	ctx = c.observer.ProviderStart(ctx, p, OpExtract)
	cred, err := p.Extract(ctx, r)
	c.observer.ProviderEnd(ctx, p, OpExtract, cred != nil, err)
	return cred, err
}

// verify is p.Verify, observed as op.
func (c *Chain) verify(ctx context.Context, r *http.Request, p Provider, cred *Credential, b Binding, op Op) error {
	if c.observer == nil {
		return p.Verify(ctx, r, cred, b)
	}
	ctx = c.observer.ProviderStart(ctx, p, op)
	err := p.Verify(ctx, r, cred, b)
	c.observer.ProviderEnd(ctx, p, op, true, err)
	return err
}

// NewChain builds the evaluator. providers is every provider of the policy, in policy order.
func NewChain(providers []Provider, index Index) *Chain {
	c := &Chain{providers: providers, index: index}
	byType := map[string]int{}
	for _, p := range providers {
		if _, ok := p.(Peeker); ok {
			byType[p.Type()]++
		}
	}
	for i, p := range providers {
		if pk, ok := p.(Peeker); ok && byType[p.Type()] > 1 {
			if c.peekers == nil {
				c.peekers = make([]Peeker, len(providers))
			}
			c.peekers[i] = pk
		}
	}
	return c
}

// peeked is what a shared provider's Peek found in a request.
type peeked struct {
	place string
	ok    bool
	known bool
}

// claimedElsewhere returns, for each provider, the name of another provider of its type that
// knows the credential in the same place while it does not; "" where none does. It is nil when
// no provider of the chain shares its type.
func (c *Chain) claimedElsewhere(r *http.Request) []string {
	if c.peekers == nil {
		return nil
	}
	pk := make([]peeked, len(c.providers))
	for i, p := range c.peekers {
		if p == nil {
			continue
		}
		place, lookup, ok := p.Peek(r)
		if !ok {
			continue
		}
		_, _, known := c.index.Resolve(c.providers[i].Name(), lookup)
		pk[i] = peeked{place: place, ok: true, known: known}
	}
	var out []string
	for i := range pk {
		if !pk[i].ok || pk[i].known {
			continue
		}
		for j := range pk {
			if j != i && pk[j].ok && pk[j].known && pk[j].place == pk[i].place && c.providers[j].Type() == c.providers[i].Type() {
				if out == nil {
					out = make([]string, len(c.providers))
				}
				out[i] = c.providers[j].Name()
				break
			}
		}
	}
	return out
}

// Result is a granted chain.
type Result struct {
	// Consumer is the identified consumer's username.
	Consumer string
	// Anonymous is true when no credential was present and the route's anonymous consumer was used.
	Anonymous bool
	// Identifier is the X-Credential-Identifier: the first binding of the chain.
	Identifier string
	// Credentials are the verified credentials, in chain order.
	Credentials []*Credential

	// inline backs Credentials for short chains, saving an allocation per request.
	inline [2]*Credential
}

// Claims returns the verified claims of the first token credential in the chain, or nil.
func (r *Result) Claims() map[string]any {
	for _, c := range r.Credentials {
		if c.Claims != nil {
			return c.Claims
		}
	}
	return nil
}

// Subject returns the subject of the first token credential in the chain, or "".
func (r *Result) Subject() string {
	for _, c := range r.Credentials {
		if c.Subject != "" {
			return c.Subject
		}
	}
	return ""
}

// Userinfo returns the X-Userinfo value of the first token credential in the chain, or "".
func (r *Result) Userinfo() string {
	for _, c := range r.Credentials {
		if c.Claims != nil {
			if c.Userinfo != "" {
				return c.Userinfo
			}
			return EncodeUserinfo(c.Claims)
		}
	}
	return ""
}

// Trace records each step of an evaluation for explain. A nil *Trace records nothing.
type Trace struct {
	Steps []Step
}

// Step is one line of a trace.
type Step struct {
	// Provider is the provider name, or "" for chain-level steps.
	Provider string
	// What is the kind of step: "credential", "binding", "chain".
	What string
	// OK is the step's verdict.
	OK bool
	// Detail explains the verdict.
	Detail string
}

// add records a step. On the granted path callers test trace != nil first: the variadic
// arguments would otherwise be boxed on the heap even when nothing is recorded.
func (t *Trace) add(provider, what string, ok bool, format string, args ...any) {
	if t == nil {
		return
	}
	t.Steps = append(t.Steps, Step{Provider: provider, What: what, OK: ok, Detail: fmt.Sprintf(format, args...)})
}

// ErrDifferentConsumers is the Reason-bearing sentinel of the "credentials belong to different
// consumers" denial.
var ErrDifferentConsumers = errors.New("credentials belong to different consumers")

// maxInline is the number of providers whose credentials are kept without a heap allocation.
const maxInline = 8

// Evaluate applies the chain rule to r. anonymous is the route's anonymous consumer ("" for none).
// It returns the granted result, a *Denial, or another error when a provider cannot decide.
func (c *Chain) Evaluate(ctx context.Context, r *http.Request, anonymous string, trace *Trace) (*Result, error) {
	type found struct {
		cred     *Credential
		consumer string
		binding  Binding
		// verified: claim matching already verified the binding.
		verified bool
	}
	var inline [maxInline]found
	creds := inline[:0]

	// 1. Every credential in the request, each resolved to its consumer. A present but invalid
	// credential fails the request even when no chain would need it.
	consumer := ""
	elsewhere := c.claimedElsewhere(r)
	for i, p := range c.providers {
		if elsewhere != nil && elsewhere[i] != "" {
			trace.add(p.Name(), "credential", true, "not in this provider's index; claimed by %s, which reads the same place", elsewhere[i])
			continue
		}
		cred, err := c.extract(ctx, r, p)
		if err != nil {
			var d *Denial
			if errors.As(err, &d) {
				trace.add(p.Name(), "credential", false, "%s", d.Error())
				return nil, d
			}
			trace.add(p.Name(), "credential", false, "cannot decide: %v", err)
			return nil, fmt.Errorf("extracting %s credential: %w", p.Name(), err)
		}
		if cred == nil {
			continue
		}
		cred.Provider = p
		owner, b, ok := c.index.Resolve(p.Name(), cred.Lookup)
		verified := false
		if !ok {
			var err error
			owner, b, err = c.matchClaims(ctx, r, p, cred, trace)
			if err != nil {
				return nil, err
			}
			verified = true
		} else if trace != nil {
			trace.add(p.Name(), "credential", true, "present, names consumer %q (%s)", owner, b.Identifier())
		}
		if consumer != "" && owner != consumer {
			trace.add("", "chain", false, "consumer %q and consumer %q", consumer, owner)
			return nil, &Denial{Status: http.StatusUnauthorized, Message: ErrDifferentConsumers.Error(),
				Reason:    fmt.Sprintf("%s names %q, an earlier credential names %q", p.Name(), owner, consumer),
				Challenge: p.Missing().Challenge}
		}
		consumer = owner
		creds = append(creds, found{cred: cred, consumer: owner, binding: b, verified: verified})
	}

	if consumer == "" {
		if anonymous != "" {
			trace.add("", "chain", true, "no credential: anonymous consumer %q", anonymous)
			return &Result{Consumer: anonymous, Anonymous: true, Identifier: "anonymous"}, nil
		}
		for _, p := range c.providers {
			if dp, ok := p.(Decliner); ok {
				if d := dp.Declined(r); d != nil {
					trace.add(p.Name(), "credential", false, "present, claimed by no provider: %s", d.Error())
					return nil, d
				}
			}
		}
		d := c.missing()
		trace.add("", "chain", false, "no credential in request")
		return nil, d
	}

	// 2. The consumer's bindings in order: each must be present and verify.
	chain := c.index.Chain(consumer)
	res := &Result{Consumer: consumer}
	if len(chain) <= len(res.inline) {
		res.Credentials = res.inline[:0:len(chain)]
	} else {
		res.Credentials = make([]*Credential, 0, len(chain))
	}
	for i, bd := range chain {
		var f *found
		for j := range creds {
			if creds[j].cred.Provider == bd.Provider {
				f = &creds[j]
				break
			}
		}
		name := bd.Provider.Name()
		if f == nil {
			d := bd.Provider.Missing().WithReason("consumer %q requires %s and the request carries none", consumer, name)
			trace.add(name, "binding", false, "missing: %s", d.Message)
			return nil, d
		}
		if f.verified {
			// Claim matching verified it to find the consumer.
		} else if err := c.verify(ctx, r, bd.Provider, f.cred, f.binding, OpVerify); err != nil {
			var d *Denial
			if errors.As(err, &d) {
				trace.add(name, "binding", false, "%s", d.Error())
				return nil, d
			}
			trace.add(name, "binding", false, "cannot decide: %v", err)
			return nil, fmt.Errorf("verifying %s credential: %w", name, err)
		}
		if trace != nil {
			trace.add(name, "binding", true, "granted (%s)", f.binding.Identifier())
		}
		if i == 0 {
			res.Identifier = f.binding.Identifier()
		}
		res.Credentials = append(res.Credentials, f.cred)
	}
	return res, nil
}

// matchClaims finds the consumer of a credential no index entry knows: the first claim-matched
// binding of p, in policy order, whose conditions it meets. When some exist and none is met,
// the first one's refusal answers (a 403 for a missing role); without any, p.Unknown().
func (c *Chain) matchClaims(ctx context.Context, r *http.Request, p Provider, cred *Credential, trace *Trace) (string, Binding, error) {
	ci, _ := c.index.(ClaimIndex)
	var cands []Candidate
	if ci != nil {
		cands = ci.Matching(p.Name())
	}
	if len(cands) == 0 {
		d := p.Unknown()
		trace.add(p.Name(), "credential", false, "present, names no consumer: %s", d.Error())
		return "", nil, d
	}
	var first *Denial
	for _, cand := range cands {
		err := c.verify(ctx, r, p, cred, cand.Binding, OpMatch)
		if err == nil {
			if trace != nil {
				trace.add(p.Name(), "credential", true, "present, no consumer bound to its subject; claim-matched: consumer %q is the first in policy order whose conditions it meets (%s)", cand.Consumer, cand.Binding.Identifier())
			}
			return cand.Consumer, cand.Binding, nil
		}
		var d *Denial
		if !errors.As(err, &d) {
			trace.add(p.Name(), "credential", false, "cannot decide whether consumer %q matches: %v", cand.Consumer, err)
			return "", nil, fmt.Errorf("matching %s credential to consumer %q: %w", p.Name(), cand.Consumer, err)
		}
		if trace != nil {
			trace.add(p.Name(), "credential", false, "claim-matched consumer %q does not match: %s", cand.Consumer, d.Error())
		}
		if first == nil {
			first = d
		}
	}
	return "", nil, first.WithReason("the token meets the conditions of no claim-matched consumer (first refusal: %s)", first.Reason)
}

// missing is the denial for a request without any credential, over every provider.
func (c *Chain) missing() *Denial { return NoCredential(c.providers) }

// NoCredential is the denial for a request that carries no credential, when providers are those
// a caller could use: the first one's message, with every one's challenge. The gateway builds one
// per route from the providers that can admit a consumer there, so that a browser is not asked
// for a password where basic-auth cannot admit anyone. It matches ErrNoCredential.
func NoCredential(providers []Provider) *Denial {
	if len(providers) == 0 {
		return &Denial{Status: http.StatusUnauthorized, Message: "Missing credentials in request", Reason: "no identity provider configured", noCredential: true}
	}
	d := *providers[0].Missing()
	if len(providers) > 1 {
		challenges := make([]string, 0, len(providers))
		for _, p := range providers {
			if ch := p.Missing().Challenge; ch != "" {
				challenges = append(challenges, ch)
			}
		}
		d.Challenge = strings.Join(challenges, ", ")
	}
	d.Reason = "no credential in request"
	d.noCredential = true
	return &d
}

// HideCredentials lets every provider of the chain remove its credential from r.
func (c *Chain) HideCredentials(r *http.Request) {
	for _, p := range c.providers {
		p.HideCredentials(r)
	}
}

// Providers returns the providers in policy order.
func (c *Chain) Providers() []Provider { return c.providers }
