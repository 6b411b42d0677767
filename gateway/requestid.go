package gateway

import (
	"crypto/rand"
	"encoding/hex"
	"net/http"
)

// Request ids: each request carries one, upstream, back to the client and in the access log.
// A trusted proxy's X-Request-Id is kept, so that one id follows a request through every hop;
// anyone else's is replaced, or a client could make its requests look like others'.

const requestIDHeader = "X-Request-Id"

// maxRequestID bounds a kept X-Request-Id.
const maxRequestID = 128

// requestID returns r's id: the trusted proxy's, or a new random one.
func (c *compiled) requestID(r *http.Request) string {
	if vs := r.Header[requestIDHeader]; len(vs) == 1 && validRequestID(vs[0]) && len(c.clients.trusted) > 0 && c.clients.peerTrusted(r) {
		return vs[0]
	}
	var b [16]byte
	_, _ = rand.Read(b[:])
	var out [32]byte
	hex.Encode(out[:], b[:])
	return string(out[:])
}

// validRequestID admits 1 to maxRequestID visible ASCII characters without spaces.
func validRequestID(v string) bool {
	if v == "" || len(v) > maxRequestID {
		return false
	}
	for i := 0; i < len(v); i++ {
		if v[i] < '!' || v[i] > '~' {
			return false
		}
	}
	return true
}
