// Package idptest has what tests of providers and of the chain share: a small in-memory Index.
package idptest

import (
	"testing"

	"github.com/portcullis/portcullis/idp"
)

// Index is an in-memory idp.Index and idp.ClaimIndex for chain tests.
type Index struct {
	entries  map[[2]string]entry
	chains   map[string][]idp.Bound
	matching map[string][]idp.Candidate
}

var (
	_ idp.Index      = (*Index)(nil)
	_ idp.ClaimIndex = (*Index)(nil)
)

type entry struct {
	consumer string
	binding  idp.Binding
}

// NewIndex returns an empty index.
func NewIndex() *Index {
	return &Index{entries: map[[2]string]entry{}, chains: map[string][]idp.Bound{}, matching: map[string][]idp.Candidate{}}
}

func (x *Index) Resolve(provider, lookup string) (string, idp.Binding, bool) {
	e, ok := x.entries[[2]string{provider, lookup}]
	return e.consumer, e.binding, ok
}

func (x *Index) Chain(consumer string) []idp.Bound { return x.chains[consumer] }

func (x *Index) Matching(provider string) []idp.Candidate { return x.matching[provider] }

// Add compiles spec for p and appends it to consumer's chain, as a policy would.
func (x *Index) Add(t testing.TB, consumer string, p idp.Provider, spec idp.BindingSpec) {
	t.Helper()
	b, err := p.Compile(spec)
	if err != nil {
		t.Fatal(err)
	}
	if cm, ok := b.(idp.ClaimMatched); ok && cm.ClaimMatched() {
		x.matching[p.Name()] = append(x.matching[p.Name()], idp.Candidate{Consumer: consumer, Binding: b})
	} else {
		x.entries[[2]string{p.Name(), b.Lookup()}] = entry{consumer: consumer, binding: b}
	}
	x.chains[consumer] = append(x.chains[consumer], idp.Bound{Provider: p, Binding: b})
}
