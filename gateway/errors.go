package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"unicode/utf16"
	"unicode/utf8"

	"github.com/portcullis/portcullis/gateway/ratelimit"
	"github.com/portcullis/portcullis/gateway/upstream"
	"github.com/portcullis/portcullis/idp"
)

// HTTPError is an error with the response it should produce. Every step of the pipeline
// returns errors; writeError is the one place that turns them into a status, a JSON body and
// the decision recorded in the access log.
type HTTPError struct {
	Status  int
	Message string
	// Decision is the access-log and metrics label ("no_route", "forbidden", "rate_limited", ...).
	Decision string
	// Header is added to the response (Retry-After, WWW-Authenticate).
	Header http.Header
	// Err is the underlying cause, logged but never sent to the client.
	Err error
	// Field is the body's JSON field; "" means "message". A limit's rejected_msg is sent as
	// "error_msg", as APISIX's limit-count and limit-req send it: clients parse that field.
	Field string
}

func (e *HTTPError) Error() string {
	if e.Err != nil {
		return fmt.Sprintf("%d %s: %v", e.Status, e.Message, e.Err)
	}
	return fmt.Sprintf("%d %s", e.Status, e.Message)
}

func (e *HTTPError) Unwrap() error { return e.Err }

var (
	errNoRoute     = &HTTPError{Status: http.StatusNotFound, Message: "404 Route Not Found", Decision: "no_route"}
	errUpstreamBad = "upstream unavailable"
)

// asHTTPError classifies any pipeline error.
func asHTTPError(err error) *HTTPError {
	var he *HTTPError
	if errors.As(err, &he) {
		return he
	}
	var d *idp.Denial
	if errors.As(err, &d) {
		h := &HTTPError{Status: d.Status, Message: d.Message, Err: d}
		switch d.Status {
		case http.StatusUnauthorized:
			h.Decision = "unauthenticated"
			if d.Challenge != "" {
				h.Header = http.Header{"Www-Authenticate": {d.Challenge}}
			}
		case http.StatusForbidden:
			h.Decision = "forbidden"
		default:
			h.Decision = "denied"
		}
		return h
	}
	if errors.Is(err, idp.ErrUnavailable) {
		return &HTTPError{Status: http.StatusServiceUnavailable, Message: "identity provider unavailable", Decision: "idp_unavailable", Err: err}
	}
	if errors.Is(err, ratelimit.ErrUnavailable) {
		return &HTTPError{Status: http.StatusServiceUnavailable, Message: "rate limiting unavailable", Decision: "ratelimit_unavailable", Err: err}
	}
	return &HTTPError{Status: http.StatusServiceUnavailable, Message: "service unavailable", Decision: "error", Err: err}
}

// upstreamError classifies an error of the round trip to an upstream.
func upstreamError(err error) *HTTPError {
	var cbe *clientBodyError
	if errors.As(err, &cbe) {
		// A malformed chunk, a body cut short or a client that stopped sending is the client's
		// fault, not the upstream's (nginx: 400, and 408 after client_body_timeout).
		// The rest of the body cannot be read or trusted: the connection is closed after the
		// answer, or the server would wait for the body to skip it.
		closeAfter := http.Header{"Connection": {"close"}}
		if upstream.IsTimeout(cbe.err) {
			return &HTTPError{Status: http.StatusRequestTimeout, Message: "request body timed out", Decision: "client_body_timeout", Header: closeAfter, Err: err}
		}
		return &HTTPError{Status: http.StatusBadRequest, Message: "malformed request body", Decision: "bad_request_body", Header: closeAfter, Err: err}
	}
	switch {
	case errors.Is(err, upstream.ErrTimeout), errors.Is(err, context.DeadlineExceeded):
		return &HTTPError{Status: http.StatusGatewayTimeout, Message: "upstream timed out", Decision: "upstream_timeout", Err: err}
	case errors.Is(err, context.Canceled):
		// The client went away; nobody reads the answer, 499 as nginx logs it.
		return &HTTPError{Status: 499, Message: "client closed request", Decision: "client_closed", Err: err}
	}
	if upstream.IsTimeout(err) {
		return &HTTPError{Status: http.StatusGatewayTimeout, Message: "upstream timed out", Decision: "upstream_timeout", Err: err}
	}
	if upstream.IsConnRefused(err) {
		return &HTTPError{Status: http.StatusBadGateway, Message: errUpstreamBad, Decision: "upstream_refused", Err: err}
	}
	return &HTTPError{Status: http.StatusBadGateway, Message: errUpstreamBad, Decision: "upstream_error", Err: err}
}

// jsonField is {field: msg}; field is one of the package's constants.
func jsonField(field, msg string) []byte {
	v, _ := json.Marshal(msg)
	body := make([]byte, 0, len(field)+len(v)+6)
	body = append(body, `{"`...)
	body = append(body, field...)
	body = append(body, `":`...)
	body = append(body, v...)
	return append(body, '}')
}

// bodyHeader carries a forward-auth refusal's body for nginx, whose auth_request passes on only
// the status and headers (auth_request_set $body $upstream_http_x_portcullis_body).
const bodyHeader = "X-Portcullis-Body"

// asciiJSON is the JSON text b with every non-ASCII character escaped (\uXXXX, surrogate pairs
// beyond the BMP), so that it is a header value any proxy passes on as it is.
func asciiJSON(b []byte) string {
	var out strings.Builder
	for _, r := range string(b) {
		switch {
		case r < utf8.RuneSelf:
			out.WriteByte(byte(r))
		case r > 0xFFFF:
			r1, r2 := utf16.EncodeRune(r)
			fmt.Fprintf(&out, "\\u%04x\\u%04x", r1, r2)
		default:
			fmt.Fprintf(&out, "\\u%04x", r)
		}
	}
	return out.String()
}

// writeJSONField writes {field: msg} with status; field is one of the package's constants.
func writeJSONField(w http.ResponseWriter, status int, field, msg string) {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	body := append(jsonField(field, msg), '\n')
	h.Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(status)
	_, _ = w.Write(body)
}
