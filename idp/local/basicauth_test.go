package local

import (
	"context"
	"encoding/base64"
	"errors"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/portcullis/portcullis/idp"
)

// localDenial asserts that err is a *Denial with the given status and message and returns it.
func localDenial(t *testing.T, err error, status int, message string) *idp.Denial {
	t.Helper()
	var d *idp.Denial
	if !errors.As(err, &d) {
		t.Fatalf("got error %v (%T), want a *Denial %q", err, err, message)
	}
	if d.Status != status || d.Message != message {
		t.Fatalf("got denial %d %q (reason %q), want %d %q", d.Status, d.Message, d.Reason, status, message)
	}
	return d
}

// localClock is a settable test clock.
type localClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *localClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *localClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

func basicHeader(user, pass string) string {
	return "Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+pass))
}

func basicRequest(authorization ...string) *http.Request {
	r := httptest.NewRequest(http.MethodGet, "/x", nil)
	for _, a := range authorization {
		r.Header.Add("Authorization", a)
	}
	return r
}

// minCostHash is a bcrypt hash made cheap for tests.
func minCostHash(t testing.TB, password string) string {
	t.Helper()
	h, err := bcrypt.GenerateFromPassword([]byte(password), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	return string(h)
}

// basicCheck runs Extract then Verify against bd; nil cred and nil error mean "not mine".
func basicCheck(p *BasicAuth, r *http.Request, bd idp.Binding) (*idp.Credential, error) {
	cred, err := p.Extract(context.Background(), r)
	if err != nil || cred == nil {
		return cred, err
	}
	return cred, p.Verify(context.Background(), r, cred, bd)
}

func TestBasicAuthExtract(t *testing.T) {
	p := NewBasicAuth(BasicAuthConfig{Name: "basic"}, nil)
	tests := []struct {
		name       string
		auth       []string
		wantLookup string
		wantDenial string
	}{
		{name: "no header", auth: nil},
		{name: "bearer is not mine", auth: []string{"Bearer a.b.c"}},
		{name: "signature is not mine", auth: []string{`Signature keyId="k"`}},
		{name: "basic", auth: []string{basicHeader("alice", "pw")}, wantLookup: "alice"},
		{name: "scheme case-insensitive", auth: []string{"bAsIc " + base64.StdEncoding.EncodeToString([]byte("alice:pw"))}, wantLookup: "alice"},
		{name: "password with colon", auth: []string{basicHeader("alice", "a:b")}, wantLookup: "alice"},
		{name: "second authorization field", auth: []string{`Signature keyId="k"`, basicHeader("bob", "pw")}, wantLookup: "bob"},
		{name: "not base64", auth: []string{"Basic !!!"}, wantDenial: "Invalid authorization in request"},
		{name: "no colon", auth: []string{"Basic " + base64.StdEncoding.EncodeToString([]byte("alice"))}, wantDenial: "Invalid authorization in request"},
		{name: "empty credentials", auth: []string{"Basic"}, wantDenial: "Invalid authorization in request"},
		{name: "empty username", auth: []string{basicHeader("", "pw")}, wantDenial: "Invalid authorization in request"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cred, err := p.Extract(context.Background(), basicRequest(tt.auth...))
			switch {
			case tt.wantDenial != "":
				d := localDenial(t, err, http.StatusUnauthorized, tt.wantDenial)
				if d.Challenge != `Basic realm="basic"` {
					t.Errorf("got challenge %q, want %q", d.Challenge, `Basic realm="basic"`)
				}
			case err != nil:
				t.Fatalf("got error %v, want none", err)
			case tt.wantLookup == "" && cred != nil:
				t.Fatalf("got credential %q, want not mine", cred.Lookup)
			case tt.wantLookup != "" && (cred == nil || cred.Lookup != tt.wantLookup):
				t.Fatalf("got credential %+v, want lookup %q", cred, tt.wantLookup)
			}
		})
	}
}

func TestBasicAuthVerify(t *testing.T) {
	p := NewBasicAuth(BasicAuthConfig{Name: "basic"}, nil)
	plain, err := p.Compile(idp.BindingSpec{Username: "alice", Password: "s3cret"})
	if err != nil {
		t.Fatal(err)
	}
	hashed, err := p.Compile(idp.BindingSpec{Username: "bob", Password: minCostHash(t, "hunter2")})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := hashed.Identifier(), "basic:bob"; got != want {
		t.Errorf("got identifier %q, want %q", got, want)
	}
	if got, want := plain.Lookup(), "alice"; got != want {
		t.Errorf("got lookup %q, want %q", got, want)
	}
	tests := []struct {
		name    string
		auth    string
		binding idp.Binding
		wantErr bool
	}{
		{name: "plain ok", auth: basicHeader("alice", "s3cret"), binding: plain},
		{name: "plain wrong", auth: basicHeader("alice", "s3cret!"), binding: plain, wantErr: true},
		{name: "plain empty", auth: basicHeader("alice", ""), binding: plain, wantErr: true},
		{name: "bcrypt ok", auth: basicHeader("bob", "hunter2"), binding: hashed},
		{name: "bcrypt wrong", auth: basicHeader("bob", "hunter3"), binding: hashed, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := basicCheck(p, basicRequest(tt.auth), tt.binding)
			if !tt.wantErr {
				if err != nil {
					t.Fatalf("got %v, want granted", err)
				}
				return
			}
			d := localDenial(t, err, http.StatusUnauthorized, "Invalid user authorization")
			if d.Reason != "password does not match" {
				t.Errorf("got reason %q, want %q", d.Reason, "password does not match")
			}
		})
	}
}

func TestBasicAuthDenials(t *testing.T) {
	p := NewBasicAuth(BasicAuthConfig{Name: "basic", Realm: "corp"}, nil)
	tests := []struct {
		name string
		d    *idp.Denial
		want string
	}{
		{name: "missing", d: p.Missing(), want: "Missing authorization in request"},
		{name: "unknown", d: p.Unknown(), want: "Invalid user authorization"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			localDenial(t, tt.d, http.StatusUnauthorized, tt.want)
			if tt.d.Challenge != `Basic realm="corp"` {
				t.Errorf("got challenge %q, want %q", tt.d.Challenge, `Basic realm="corp"`)
			}
		})
	}
}

func TestBasicAuthCompile(t *testing.T) {
	p := NewBasicAuth(BasicAuthConfig{Name: "basic"}, nil)
	tests := []struct {
		name    string
		spec    idp.BindingSpec
		wantErr bool
	}{
		{name: "plain", spec: idp.BindingSpec{Username: "a", Password: "p"}},
		{name: "bcrypt", spec: idp.BindingSpec{Username: "a", Password: minCostHash(t, "p")}},
		{name: "no username", spec: idp.BindingSpec{Password: "p"}, wantErr: true},
		{name: "colon in username", spec: idp.BindingSpec{Username: "a:b", Password: "p"}, wantErr: true},
		{name: "no password", spec: idp.BindingSpec{Username: "a"}, wantErr: true},
		{name: "broken bcrypt hash", spec: idp.BindingSpec{Username: "a", Password: "$2a$10$tooshort"}, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := p.Compile(tt.spec)
			if (err != nil) != tt.wantErr {
				t.Fatalf("got error %v, want error %v", err, tt.wantErr)
			}
		})
	}
}

// countingCompare wraps bcrypt and counts calls.
type countingCompare struct{ calls atomic.Int64 }

func (c *countingCompare) compare(hash, pw []byte) error {
	c.calls.Add(1)
	return bcrypt.CompareHashAndPassword(hash, pw)
}

func TestBasicAuthCache(t *testing.T) {
	clock := &localClock{now: time.Unix(1_700_000_000, 0)}
	cc := &countingCompare{}
	p := NewBasicAuth(BasicAuthConfig{Name: "basic", CacheTTL: time.Minute, Now: clock.Now, CompareHash: cc.compare}, nil)
	bd, err := p.Compile(idp.BindingSpec{Username: "bob", Password: minCostHash(t, "hunter2")})
	if err != nil {
		t.Fatal(err)
	}
	steps := []struct {
		name      string
		pass      string
		advance   time.Duration
		wantOK    bool
		wantCalls int64
	}{
		{name: "first check runs bcrypt", pass: "hunter2", wantOK: true, wantCalls: 1},
		{name: "second check is cached", pass: "hunter2", wantOK: true, wantCalls: 1},
		{name: "wrong password runs bcrypt", pass: "nope", wantOK: false, wantCalls: 2},
		{name: "wrong password is not cached", pass: "nope", wantOK: false, wantCalls: 3},
		{name: "still cached before ttl", pass: "hunter2", advance: 59 * time.Second, wantOK: true, wantCalls: 3},
		{name: "expired after ttl", pass: "hunter2", advance: time.Second, wantOK: true, wantCalls: 4},
	}
	for _, s := range steps {
		t.Run(s.name, func(t *testing.T) {
			clock.Advance(s.advance)
			_, err := basicCheck(p, basicRequest(basicHeader("bob", s.pass)), bd)
			if (err == nil) != s.wantOK {
				t.Fatalf("got %v, want ok=%v", err, s.wantOK)
			}
			if got := cc.calls.Load(); got != s.wantCalls {
				t.Fatalf("got %d bcrypt calls, want %d", got, s.wantCalls)
			}
		})
	}
}

func TestBasicAuthCacheKeyHasNoPassword(t *testing.T) {
	p := NewBasicAuth(BasicAuthConfig{Name: "basic"}, nil)
	q := NewBasicAuth(BasicAuthConfig{Name: "basic"}, nil)
	hash := []byte(minCostHash(t, "pw"))
	if p.checkKey("u", "pw", hash) == q.checkKey("u", "pw", hash) {
		t.Error("got equal cache keys from two providers, want per-process random keys")
	}
	if p.checkKey("u", "pw", hash) == p.checkKey("u", "pw2", hash) {
		t.Error("got equal cache keys for different passwords")
	}
	if p.checkKey("ab", "c", hash) == p.checkKey("a", "bc", hash) {
		t.Error("got equal cache keys for differently split user and password")
	}
	if p.checkKey("u", "pw", hash) == p.checkKey("u", "pw", []byte(minCostHash(t, "pw"))) {
		t.Error("got equal cache keys for two stored hashes, want a changed hash to miss the cache")
	}
	// The HMACs are pooled: a reused one must start afresh.
	first := p.checkKey("u", "pw", hash)
	for range 3 {
		if got := p.checkKey("u", "pw", hash); got != first {
			t.Fatalf("got cache key %x, want %x for the same triple", got, first)
		}
	}
}

// blockingCompare holds every bcrypt call until released, reporting each entry.
type blockingCompare struct {
	entered chan struct{}
	release chan struct{}
	calls   atomic.Int64
}

func newBlockingCompare() *blockingCompare {
	return &blockingCompare{entered: make(chan struct{}, 100), release: make(chan struct{})}
}

func (b *blockingCompare) compare(hash, pw []byte) error {
	b.calls.Add(1)
	b.entered <- struct{}{}
	<-b.release
	return bcrypt.CompareHashAndPassword(hash, pw)
}

func TestBasicAuthSingleflight(t *testing.T) {
	bc := newBlockingCompare()
	p := NewBasicAuth(BasicAuthConfig{Name: "basic", MaxConcurrentChecks: 1, CompareHash: bc.compare}, nil)
	bd, err := p.Compile(idp.BindingSpec{Username: "bob", Password: minCostHash(t, "hunter2")})
	if err != nil {
		t.Fatal(err)
	}
	const n = 8
	var ready, done sync.WaitGroup
	errs := make([]error, n)
	ready.Add(n)
	done.Add(n)
	for i := range n {
		go func() {
			defer done.Done()
			ready.Done()
			_, errs[i] = basicCheck(p, basicRequest(basicHeader("bob", "hunter2")), bd)
		}()
	}
	<-bc.entered
	ready.Wait()
	close(bc.release)
	done.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("check %d: got %v, want granted (collapsed into one bcrypt call)", i, err)
		}
	}
	if got := bc.calls.Load(); got != 1 {
		t.Errorf("got %d bcrypt calls, want 1", got)
	}
}

func TestBasicAuthBoundedBcrypt(t *testing.T) {
	bc := newBlockingCompare()
	p := NewBasicAuth(BasicAuthConfig{Name: "basic", MaxConcurrentChecks: 1, CompareHash: bc.compare}, nil)
	bd, err := p.Compile(idp.BindingSpec{Username: "bob", Password: minCostHash(t, "hunter2")})
	if err != nil {
		t.Fatal(err)
	}
	carol, err := p.Compile(idp.BindingSpec{Username: "carol", Password: minCostHash(t, "pw")})
	if err != nil {
		t.Fatal(err)
	}
	// Warm the cache for carol while the slot is free.
	warm := make(chan error, 1)
	go func() {
		_, err := basicCheck(p, basicRequest(basicHeader("carol", "pw")), carol)
		warm <- err
	}()
	<-bc.entered
	bc.release <- struct{}{}
	if err := <-warm; err != nil {
		t.Fatalf("warming: got %v, want granted", err)
	}

	// One slow wrong-password check holds the only slot.
	slow := make(chan error, 1)
	go func() {
		_, err := basicCheck(p, basicRequest(basicHeader("bob", "wrong-1")), bd)
		slow <- err
	}()
	<-bc.entered

	t.Run("saturated refuses quickly", func(t *testing.T) {
		_, err := basicCheck(p, basicRequest(basicHeader("bob", "wrong-2")), bd)
		if !errors.Is(err, ErrPasswordChecksBusy) || !errors.Is(err, idp.ErrUnavailable) {
			t.Fatalf("got %v, want ErrPasswordChecksBusy wrapping ErrUnavailable", err)
		}
	})
	t.Run("cached pair never touches bcrypt", func(t *testing.T) {
		before := bc.calls.Load()
		if _, err := basicCheck(p, basicRequest(basicHeader("carol", "pw")), carol); err != nil {
			t.Fatalf("got %v, want granted from cache", err)
		}
		if got := bc.calls.Load(); got != before {
			t.Fatalf("got %d bcrypt calls, want %d", got, before)
		}
	})
	close(bc.release)
	localDenial(t, <-slow, http.StatusUnauthorized, "Invalid user authorization")
}

func TestBasicAuthHideCredentials(t *testing.T) {
	tests := []struct {
		name string
		hide bool
		auth []string
		want []string
	}{
		{name: "hidden", hide: true, auth: []string{basicHeader("a", "b")}, want: nil},
		{name: "kept when not configured", hide: false, auth: []string{basicHeader("a", "b")}, want: []string{basicHeader("a", "b")}},
		{name: "other scheme kept", hide: true, auth: []string{"Bearer x.y.z", basicHeader("a", "b")}, want: []string{"Bearer x.y.z"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := NewBasicAuth(BasicAuthConfig{Name: "basic", HideCredentials: tt.hide}, nil)
			r := basicRequest(tt.auth...)
			p.HideCredentials(r)
			got := r.Header.Values("Authorization")
			if len(got) != len(tt.want) || (len(got) > 0 && got[0] != tt.want[0]) {
				t.Fatalf("got %q, want %q", got, tt.want)
			}
		})
	}
}

func FuzzBasicHeader(f *testing.F) {
	for _, s := range []string{"", "Basic", "Basic ", basicHeader("a", "b"), basicHeader("", ""), "Basic ====",
		"basic YTpi", "Basic YQ==", "Bearer x", "Basic \x00\xff", "Basic " + base64.StdEncoding.EncodeToString([]byte(":::"))} {
		f.Add(s)
	}
	p := NewBasicAuth(BasicAuthConfig{Name: "basic", CacheSize: -1}, nil)
	bd, err := p.Compile(idp.BindingSpec{Username: "a", Password: "b"})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, h string) {
		r := httptest.NewRequest(http.MethodGet, "/", nil)
		r.Header["Authorization"] = []string{h}
		cred, err := p.Extract(context.Background(), r)
		if err != nil {
			var d *idp.Denial
			if !errors.As(err, &d) {
				t.Fatalf("got non-denial error %v", err)
			}
			return
		}
		if cred == nil {
			return
		}
		if cred.Lookup == "" {
			t.Fatal("got a credential with an empty lookup")
		}
		if err := p.Verify(context.Background(), r, cred, bd); err != nil {
			var d *idp.Denial
			if !errors.As(err, &d) {
				t.Fatalf("got non-denial error %v", err)
			}
		}
	})
}

func BenchmarkBasicAuthCached(b *testing.B) {
	p := NewBasicAuth(BasicAuthConfig{Name: "basic"}, nil)
	bd, err := p.Compile(idp.BindingSpec{Username: "bob", Password: minCostHash(b, "hunter2")})
	if err != nil {
		b.Fatal(err)
	}
	r := basicRequest(basicHeader("bob", "hunter2"))
	if _, err := basicCheck(p, r, bd); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := basicCheck(p, r, bd); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkBasicAuthUncached(b *testing.B) {
	p := NewBasicAuth(BasicAuthConfig{Name: "basic", CacheSize: -1}, nil)
	bd, err := p.Compile(idp.BindingSpec{Username: "bob", Password: minCostHash(b, "hunter2")})
	if err != nil {
		b.Fatal(err)
	}
	r := basicRequest(basicHeader("bob", "hunter2"))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := basicCheck(p, r, bd); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkBasicAuthPlain(b *testing.B) {
	p := NewBasicAuth(BasicAuthConfig{Name: "basic"}, nil)
	bd, err := p.Compile(idp.BindingSpec{Username: "bob", Password: "hunter2"})
	if err != nil {
		b.Fatal(err)
	}
	r := basicRequest(basicHeader("bob", "hunter2"))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := basicCheck(p, r, bd); err != nil {
			b.Fatal(err)
		}
	}
}
