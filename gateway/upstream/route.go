package upstream

import (
	"net/http"
	"time"
)

// Route is how one route reaches its upstream: its targets, the transport for the requests the
// pool does not send, and the route timeout (0: none), which bounds the dial and the wait for
// the response headers and leaves a slow but healthy body to the client.
type Route struct {
	Balancer  *Balancer
	Transport http.RoundTripper
	Timeout   time.Duration
}

// Attempt is the request Send forwards, as the pipeline sees it.
type Attempt interface {
	// Aim points the outgoing request at t (its URL, and anything logged about the target).
	Aim(t *Target)
	// PassedOver is told that t could not be connected to and is passed over for FailTimeout.
	PassedOver(t *Target, err error)
}

// DialTimeout bounds connecting to a target: the route timeout, at most 5 s.
func (u *Route) DialTimeout() time.Duration {
	if u.Timeout > 0 {
		return min(u.Timeout, 5*time.Second)
	}
	return 5 * time.Second
}

// Send sends out to one of the route's targets and returns its response, which the caller must
// close. A target that cannot be connected to has received nothing of the request: it is passed
// over for a while and the request goes to the next one (nginx's proxy_next_upstream error), as
// long as its body has not been read. out.Body is closed, even on a failed dial.
func (u *Route) Send(out *http.Request, a Attempt) (*http.Response, error) {
	targets := u.Balancer.targets
	for tries := len(targets); ; tries-- {
		t := u.Balancer.Next(time.Now())
		a.Aim(t)
		bodyKept := out.Body == nil
		var resp *http.Response
		var err error
		if t.Pool != nil && Eligible(out) {
			host := out.Host
			if host == "" {
				host = out.URL.Host
			}
			resp, err = t.Pool.RoundTrip(out, host, u.Timeout, u.DialTimeout())
			bodyKept = true // the pool reads no body before it is connected
		} else {
			resp, err = u.Transport.RoundTrip(out)
		}
		if err == nil || !IsDialError(err) || out.Context().Err() != nil {
			return resp, err
		}
		if len(targets) > 1 {
			t.MarkDown(time.Now())
			a.PassedOver(t, err)
		}
		if tries <= 1 || !bodyKept {
			return nil, err
		}
	}
}
