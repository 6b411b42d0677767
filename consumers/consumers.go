// Package consumers holds the callers of the gateway: consumers, consumer groups, their ordered
// identity-provider bindings, and the credential index that maps a credential to its consumer.
package consumers

import (
	"fmt"

	"github.com/portcullis/portcullis/idp"
)

// Consumer is one caller of the gateway.
type Consumer struct {
	Username string
	// Group is the consumer group's name, or "".
	Group string
	// Chain is the consumer's bindings in policy order; every one must grant.
	Chain []idp.Bound
}

// Group is a consumer group. Its plugins live in the policy snapshot.
type Group struct {
	Name string
}

type indexKey struct {
	provider string
	lookup   string
}

type indexEntry struct {
	consumer string
	binding  idp.Binding
}

// Set is an immutable set of consumers and groups with their credential index. It implements
// idp.Index. Build it with a Builder.
type Set struct {
	consumers map[string]*Consumer
	groups    map[string]*Group
	index     map[indexKey]indexEntry
	// matching holds the claim-matched bindings (idp.ClaimMatched) per provider, in policy order.
	matching map[string][]idp.Candidate
}

var (
	_ idp.Index      = (*Set)(nil)
	_ idp.ClaimIndex = (*Set)(nil)
)

// Matching returns the claim-matched bindings of provider in policy order.
func (s *Set) Matching(provider string) []idp.Candidate { return s.matching[provider] }

func claimMatched(b idp.Binding) bool {
	cm, ok := b.(idp.ClaimMatched)
	return ok && cm.ClaimMatched()
}

// Resolve returns the consumer whose binding to provider claims lookup.
func (s *Set) Resolve(provider, lookup string) (string, idp.Binding, bool) {
	e, ok := s.index[indexKey{provider: provider, lookup: lookup}]
	if !ok {
		return "", nil, false
	}
	return e.consumer, e.binding, true
}

// Chain returns the consumer's chain.
func (s *Set) Chain(consumer string) []idp.Bound {
	if c, ok := s.consumers[consumer]; ok {
		return c.Chain
	}
	return nil
}

// Consumer returns the named consumer.
func (s *Set) Consumer(username string) (*Consumer, bool) {
	c, ok := s.consumers[username]
	return c, ok
}

// Group returns the named group.
func (s *Set) Group(name string) (*Group, bool) {
	g, ok := s.groups[name]
	return g, ok
}

// Len is the number of consumers.
func (s *Set) Len() int { return len(s.consumers) }

// Builder collects consumers and reports conflicts. It is not safe for concurrent use.
type Builder struct {
	set *Set
}

// NewBuilder starts an empty set; sizeHint is the expected number of consumers.
func NewBuilder(sizeHint int) *Builder {
	return &Builder{set: &Set{
		consumers: make(map[string]*Consumer, sizeHint),
		groups:    make(map[string]*Group),
		index:     make(map[indexKey]indexEntry, sizeHint),
	}}
}

// ConflictError is returned when two bindings claim the same credential.
type ConflictError struct {
	Provider string
	// Other is the consumer that already holds the credential.
	Other string
}

func (e *ConflictError) Error() string {
	return fmt.Sprintf("credential for %s is already bound to consumer %q", e.Provider, e.Other)
}

// AddGroup adds a consumer group.
func (b *Builder) AddGroup(g *Group) error {
	if _, dup := b.set.groups[g.Name]; dup {
		return fmt.Errorf("consumer group %q is defined twice", g.Name)
	}
	b.set.groups[g.Name] = g
	return nil
}

// AddConsumer adds a consumer and indexes its bindings.
// It fails on a duplicate username or a credential already bound to someone (*ConflictError,
// one per binding, joined).
func (b *Builder) AddConsumer(c *Consumer) error {
	if _, dup := b.set.consumers[c.Username]; dup {
		return fmt.Errorf("consumer %q is defined twice", c.Username)
	}
	for _, bd := range c.Chain {
		if claimMatched(bd.Binding) {
			continue // any number of consumers may match by claims: the first in order wins
		}
		k := indexKey{provider: bd.Provider.Name(), lookup: bd.Binding.Lookup()}
		if e, dup := b.set.index[k]; dup {
			return &ConflictError{Provider: bd.Provider.Name(), Other: e.consumer}
		}
	}
	for _, bd := range c.Chain {
		name := bd.Provider.Name()
		if claimMatched(bd.Binding) {
			if b.set.matching == nil {
				b.set.matching = map[string][]idp.Candidate{}
			}
			b.set.matching[name] = append(b.set.matching[name], idp.Candidate{Consumer: c.Username, Binding: bd.Binding})
			continue
		}
		b.set.index[indexKey{provider: name, lookup: bd.Binding.Lookup()}] = indexEntry{consumer: c.Username, binding: bd.Binding}
	}
	b.set.consumers[c.Username] = c
	return nil
}

// Build returns the finished set. The builder must not be used afterwards.
func (b *Builder) Build() *Set {
	s := b.set
	b.set = nil
	return s
}
