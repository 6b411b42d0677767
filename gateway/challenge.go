package gateway

import (
	"errors"
	"slices"

	"github.com/portcullis/portcullis/idp"
	"github.com/portcullis/portcullis/policies"
)

// admission is what computing each route's no-credential answer needs of the whole policy,
// built once per snapshot.
type admission struct {
	snap  *policies.Snapshot
	index map[idp.Provider]int
	// counts is how many consumers bind each provider, by index.
	counts []int
	// members are the consumers of each group, built on first use.
	members map[string][]string
}

func newAdmission(snap *policies.Snapshot) *admission {
	a := &admission{snap: snap, index: make(map[idp.Provider]int, len(snap.Providers)), counts: make([]int, len(snap.Providers))}
	for i, p := range snap.Providers {
		a.index[p] = i
	}
	for _, cons := range snap.Policy.Consumers {
		a.each(cons.Username, func(i int) { a.counts[i]++ })
	}
	return a
}

// each calls f with the index of every provider the consumer binds.
func (a *admission) each(consumer string, f func(int)) {
	for _, b := range a.snap.Consumers.Chain(consumer) {
		if i, ok := a.index[b.Provider]; ok {
			f(i)
		}
	}
}

func (a *admission) membersOf(group string) []string {
	if a.members == nil {
		a.members = map[string][]string{}
		for _, cons := range a.snap.Policy.Consumers {
			if cons.Group != "" {
				a.members[cons.Group] = append(a.members[cons.Group], cons.Username)
			}
		}
	}
	return a.members[group]
}

// noCredential is the route's answer to a request without credentials: the challenges of the
// providers that can admit a consumer on it, in policy order, and the first one's message. It
// is nil when no provider can (the route admits nobody): the chain's answer over every provider
// then stands.
func (a *admission) noCredential(rt *route) *idp.Denial {
	used := make([]bool, len(a.counts))
	if rt.allowConsumers == nil && rt.allowGroups == nil {
		counts := slices.Clone(a.counts)
		sub := func(consumer string) { a.each(consumer, func(i int) { counts[i]-- }) }
		for u := range rt.denyConsumers {
			sub(u)
		}
		for g := range rt.denyGroups {
			for _, u := range a.membersOf(g) {
				if !rt.denyConsumers[u] {
					sub(u)
				}
			}
		}
		for i, n := range counts {
			used[i] = n > 0
		}
	} else {
		admit := func(consumer, group string) {
			if rt.denyConsumers[consumer] || (group != "" && rt.denyGroups[group]) {
				return
			}
			a.each(consumer, func(i int) { used[i] = true })
		}
		for u := range rt.allowConsumers {
			if cons, ok := a.snap.Consumers.Consumer(u); ok {
				admit(u, cons.Group)
			}
		}
		for g := range rt.allowGroups {
			for _, u := range a.membersOf(g) {
				admit(u, g)
			}
		}
	}
	var ps []idp.Provider
	for i, p := range a.snap.Providers {
		if used[i] {
			ps = append(ps, p)
		}
	}
	if len(ps) == 0 {
		return nil
	}
	return idp.NoCredential(ps)
}

// routeDenial replaces the chain's no-credential answer by the route's.
func (rt *route) routeDenial(err error) error {
	if rt.noCredential != nil && errors.Is(err, idp.ErrNoCredential) {
		return rt.noCredential
	}
	return err
}
