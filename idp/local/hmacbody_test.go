package local

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/portcullis/portcullis/idp"
)

// gatedBody is a request body that reports its first Read on started and then waits for open:
// a request parked in the middle of its body, holding what it has reserved.
type gatedBody struct {
	data    io.Reader
	started chan<- struct{}
	open    <-chan struct{}
	once    bool
}

func (g *gatedBody) Read(p []byte) (int, error) {
	if !g.once {
		g.once = true
		g.started <- struct{}{}
		<-g.open
	}
	return g.data.Read(p)
}

func (g *gatedBody) Close() error { return nil }

// signedBodyRequest is a POST of body read from rd, with Digest signed.
func signedBodyRequest(t *testing.T, body []byte, rd io.ReadCloser, contentLength int64) *http.Request {
	t.Helper()
	r := httptest.NewRequest("POST", "/x", nil)
	r.Body = rd
	r.ContentLength = contentLength
	r.Header.Set("Date", hmacNow.Format(http.TimeFormat))
	if err := SignRequest(r, SignInput{KeyID: "partner", Secret: "partner-secret", Body: body}); err != nil {
		t.Fatal(err)
	}
	return r
}

// TestHMACAuthBodyBudgetConcurrent holds the bound on the bodies buffered at once (issue 11:
// 40 requests of 10 MB took 585 MB): with room for three bodies, three requests parked in their
// bodies hold it, the next two are refused at once with 503 rather than queued, and when the
// three have been read upstream the room is back.
func TestHMACAuthBodyBudgetConcurrent(t *testing.T) {
	const size, parked, refused = 30, 3, 2
	p := newTestHMAC(t, HMACAuthConfig{ValidateRequestBody: true, MaxReqBodySize: size, MaxBufferedBodySize: parked*size + size - 1})
	bd, err := p.Compile(idp.BindingSpec{KeyID: "partner", Secret: "partner-secret"})
	if err != nil {
		t.Fatal(err)
	}
	body := bytes.Repeat([]byte("b"), size)
	started := make(chan struct{})
	open := make(chan struct{})
	type result struct {
		r   *http.Request
		err error
	}
	results := make(chan result)
	for range parked + refused {
		r := signedBodyRequest(t, body, &gatedBody{data: bytes.NewReader(body), started: started, open: open}, size)
		go func() { results <- result{r, hmacCheck(p, r, bd)} }()
	}

	var gotParked, gotRefused int
	for range parked + refused {
		select {
		case <-started:
			gotParked++
		case res := <-results:
			if !errors.Is(res.err, ErrBodyBufferFull) || !errors.Is(res.err, idp.ErrUnavailable) {
				t.Fatalf("got %v, want %v (503)", res.err, ErrBodyBufferFull)
			}
			gotRefused++
		}
	}
	if gotParked != parked || gotRefused != refused {
		t.Fatalf("got %d parked and %d refused, want %d and %d", gotParked, gotRefused, parked, refused)
	}
	if got, want := p.budget.used.Load(), int64(parked*size); got != want {
		t.Errorf("got %d bytes held, want %d", got, want)
	}

	close(open)
	for range parked {
		res := <-results
		if res.err != nil {
			t.Fatalf("got %v, want granted", res.err)
		}
		got, err := io.ReadAll(res.r.Body) // as the upstream does
		if err != nil || !bytes.Equal(got, body) {
			t.Fatalf("got body %q, %v, want %q", got, err, body)
		}
	}
	if got := p.budget.used.Load(); got != 0 {
		t.Errorf("got %d bytes held after the bodies were read, want 0", got)
	}
	r := signedBodyRequest(t, body, io.NopCloser(bytes.NewReader(body)), size)
	if err := hmacCheck(p, r, bd); err != nil {
		t.Fatalf("after release: got %v, want granted", err)
	}
}

// TestHMACAuthBodyBudgetRelease checks every way a held body gives its bytes back, so that no
// request can keep budget after it has ended.
func TestHMACAuthBodyBudgetRelease(t *testing.T) {
	const limit = 10000
	body := bytes.Repeat([]byte("x"), 9000)
	tests := []struct {
		name  string
		build func(t *testing.T) *http.Request
		// after runs once the check is done (the request granted unless wantErr).
		after   func(t *testing.T, r *http.Request, ended <-chan struct{})
		wantErr bool
	}{
		{name: "read to the end", build: func(t *testing.T) *http.Request {
			return signedBodyRequest(t, body, io.NopCloser(bytes.NewReader(body)), int64(len(body)))
		}, after: func(t *testing.T, r *http.Request, _ <-chan struct{}) {
			if _, err := io.Copy(io.Discard, r.Body); err != nil {
				t.Fatal(err)
			}
		}},
		{name: "unknown length read to the end", build: func(t *testing.T) *http.Request {
			return signedBodyRequest(t, body, io.NopCloser(bytes.NewReader(body)), -1)
		}, after: func(t *testing.T, r *http.Request, _ <-chan struct{}) {
			if _, err := io.Copy(io.Discard, r.Body); err != nil {
				t.Fatal(err)
			}
		}},
		{name: "closed", build: func(t *testing.T) *http.Request {
			return signedBodyRequest(t, body, io.NopCloser(bytes.NewReader(body)), int64(len(body)))
		}, after: func(t *testing.T, r *http.Request, _ <-chan struct{}) {
			if err := r.Body.Close(); err != nil {
				t.Fatal(err)
			}
		}},
		{name: "request ended unread", build: func(t *testing.T) *http.Request {
			// The server cancels a request's context when its handler returns.
			ctx, cancel := context.WithCancel(context.Background())
			t.Cleanup(cancel)
			r := signedBodyRequest(t, body, io.NopCloser(bytes.NewReader(body)), int64(len(body)))
			return r.WithContext(context.WithValue(ctx, cancelKey{}, cancel))
		}, after: func(t *testing.T, r *http.Request, ended <-chan struct{}) {
			r.Context().Value(cancelKey{}).(context.CancelFunc)()
			<-ended
		}},
		{name: "digest mismatch", wantErr: true, build: func(t *testing.T) *http.Request {
			return signedBodyRequest(t, body, io.NopCloser(strings.NewReader(strings.Repeat("y", len(body)))), int64(len(body)))
		}},
		{name: "too large without length", wantErr: true, build: func(t *testing.T) *http.Request {
			big := bytes.Repeat([]byte("x"), limit+1)
			return signedBodyRequest(t, big, io.NopCloser(bytes.NewReader(big)), -1)
		}},
		{name: "exactly the limit without length", build: func(t *testing.T) *http.Request {
			full := bytes.Repeat([]byte("x"), limit)
			return signedBodyRequest(t, full, io.NopCloser(bytes.NewReader(full)), -1)
		}, after: func(t *testing.T, r *http.Request, _ <-chan struct{}) {
			if _, err := io.Copy(io.Discard, r.Body); err != nil {
				t.Fatal(err)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// A budget of exactly one largest body: whatever a request holds shows.
			p := newTestHMAC(t, HMACAuthConfig{ValidateRequestBody: true, MaxReqBodySize: limit, MaxBufferedBodySize: limit})
			ended := make(chan struct{}, 1)
			p.afterRequest = func(ctx context.Context, f func()) func() bool {
				return context.AfterFunc(ctx, func() { f(); ended <- struct{}{} })
			}
			bd, err := p.Compile(idp.BindingSpec{KeyID: "partner", Secret: "partner-secret"})
			if err != nil {
				t.Fatal(err)
			}
			r := tt.build(t)
			err = hmacCheck(p, r, bd)
			if (err != nil) != tt.wantErr {
				t.Fatalf("got %v, want error %v", err, tt.wantErr)
			}
			if !tt.wantErr {
				if got := p.budget.used.Load(); got == 0 {
					t.Errorf("got no bytes held while the body waits for the upstream, want some")
				}
				tt.after(t, r, ended)
			}
			if got := p.budget.used.Load(); got != 0 {
				t.Errorf("got %d bytes held, want 0", got)
			}
		})
	}
}

// cancelKey holds, in a test request's context, the function that ends the request.
type cancelKey struct{}
