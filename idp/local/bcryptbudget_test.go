package local

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"

	"golang.org/x/crypto/bcrypt"

	"github.com/portcullis/portcullis/idp"
)

// gateCompare is real bcrypt (at its lowest cost) for right passwords and holds every wrong one
// ("wrong…") until that password is released, as a slow bcrypt would, reporting each entry.
type gateCompare struct {
	entered chan string
	mu      sync.Mutex
	gates   map[string]chan struct{}
	opened  bool
}

func newGateCompare() *gateCompare {
	return &gateCompare{entered: make(chan string, 1000), gates: map[string]chan struct{}{}}
}

func (g *gateCompare) gate(pw string) chan struct{} {
	g.mu.Lock()
	defer g.mu.Unlock()
	c, ok := g.gates[pw]
	if !ok {
		c = make(chan struct{})
		if g.opened {
			close(c)
		}
		g.gates[pw] = c
	}
	return c
}

func (g *gateCompare) compare(hash, pw []byte) error {
	if strings.HasPrefix(string(pw), "wrong") {
		c := g.gate(string(pw))
		g.entered <- string(pw)
		<-c
		return bcrypt.ErrMismatchedHashAndPassword
	}
	return bcrypt.CompareHashAndPassword(hash, pw)
}

// release lets the held check of pw finish.
func (g *gateCompare) release(pw string) { close(g.gate(pw)) }

// openAll lets every held and future wrong password finish.
func (g *gateCompare) openAll() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.opened {
		return
	}
	g.opened = true
	for _, c := range g.gates {
		select {
		case <-c:
		default:
			close(c)
		}
	}
}

// TestBasicAuthWrongPasswordBudget: wrong passwords for one username, however many clients send
// them at once, hold at most one bcrypt slot, and once that username is a suspect none of the
// shared ones: other users' fresh right passwords are checked and granted meanwhile. Suspects
// share a bounded pool of their own, and usernames that never logged in cannot take the last
// shared slots from those who did.
func TestBasicAuthWrongPasswordBudget(t *testing.T) {
	g := newGateCompare()
	t.Cleanup(g.openAll)
	// Four shared slots, three of them open to unverified usernames; one suspect slot. No cache,
	// so that every right password is a fresh bcrypt check.
	p := NewBasicAuth(BasicAuthConfig{Name: "basic", MaxConcurrentChecks: 4, MaxSuspectChecks: 1, CacheSize: -1, CompareHash: g.compare}, nil)
	users := map[string]idp.Binding{}
	for _, u := range []string{"alice", "bob", "carol", "dave", "erin", "fred", "gina", "hank", "judy"} {
		bd, err := p.Compile(idp.BindingSpec{Username: u, Password: minCostHash(t, u+"-pw")})
		if err != nil {
			t.Fatal(err)
		}
		users[u] = bd
	}
	check := func(user, pass string) error {
		_, err := basicCheck(p, basicRequest(basicHeader(user, pass)), users[user])
		return err
	}
	grant := func(t *testing.T, user string) {
		t.Helper()
		if err := check(user, user+"-pw"); err != nil {
			t.Fatalf("%s's right password: got %v, want granted", user, err)
		}
	}
	busy := func(t *testing.T, user, pass string) {
		t.Helper()
		if err := check(user, pass); !errors.Is(err, ErrPasswordChecksBusy) {
			t.Fatalf("%s: got %v, want ErrPasswordChecksBusy", user, err)
		}
	}
	// hold starts a check of a wrong password and returns once it holds a bcrypt slot.
	hold := func(t *testing.T, user, pass string) chan error {
		t.Helper()
		res := make(chan error, 1)
		go func() { res <- check(user, pass) }()
		select {
		case pw := <-g.entered:
			if pw != pass {
				t.Fatalf("got %q running bcrypt, want %q", pw, pass)
			}
		case err := <-res:
			t.Fatalf("%s: got %v, want the check to run", user, err)
		}
		return res
	}
	wrong := func(t *testing.T, res chan error) {
		t.Helper()
		localDenial(t, <-res, http.StatusUnauthorized, "Invalid user authorization")
	}
	// hammer sends n different wrong passwords for user at once and returns, with the held
	// check's password and result, when exactly one of them runs bcrypt and the others were
	// refused. Passwords are never reused across calls: a released gate stays open, so a
	// password released by an earlier call would run bcrypt at once.
	hammers := 0
	hammer := func(t *testing.T, user string, n int) (string, chan error) {
		t.Helper()
		hammers++
		call := hammers
		results := make(chan error, n)
		for i := range n {
			go func() { results <- check(user, fmt.Sprintf("wrong-%s-%d-%d", user, call, i)) }()
		}
		var running []string
		refused := 0
		for len(running)+refused < n {
			select {
			case pw := <-g.entered:
				running = append(running, pw)
				if len(running) > 1 {
					t.Fatalf("hammering %s: got %d checks running bcrypt at once, want 1", user, len(running))
				}
			case err := <-results:
				if !errors.Is(err, ErrPasswordChecksBusy) {
					t.Fatalf("hammering %s: got %v, want ErrPasswordChecksBusy for all but one check", user, err)
				}
				refused++
			}
		}
		if len(running) != 1 {
			t.Fatalf("hammering %s: got %d running, want 1", user, len(running))
		}
		return running[0], results
	}

	// alice and bob logged in before: they are trusted.
	grant(t, "alice")
	grant(t, "bob")

	t.Run("one username holds at most one slot before it is a suspect", func(t *testing.T) {
		pw, held := hammer(t, "carol", 16)
		grant(t, "dave") // never logged in before
		grant(t, "alice")
		g.release(pw)
		wrong(t, held) // carol is now a suspect
		judy := hold(t, "judy", "wrong-judy-1")
		g.release("wrong-judy-1")
		wrong(t, judy) // and so is judy
	})

	t.Run("a suspect's checks leave every shared slot to the others", func(t *testing.T) {
		pw, held := hammer(t, "carol", 16)
		// Three unverified usernames fill their share of the four shared slots.
		var others []chan error
		for _, u := range []string{"erin", "fred", "gina"} {
			others = append(others, hold(t, u, "wrong-"+u))
		}
		t.Run("the suspect pool is bounded", func(t *testing.T) {
			busy(t, "judy", "wrong-judy-2") // carol holds the only suspect slot
		})
		t.Run("unverified usernames cannot take the last shared slot", func(t *testing.T) {
			busy(t, "hank", "hank-pw")
			grant(t, "bob") // trusted: the fourth shared slot
		})
		g.release(pw)
		wrong(t, held)
		for _, u := range []string{"erin", "fred", "gina"} {
			g.release("wrong-" + u)
		}
		for _, res := range others {
			wrong(t, res)
		}
		grant(t, "hank")
	})
}
