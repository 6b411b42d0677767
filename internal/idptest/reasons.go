package idptest

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"

	"github.com/portcullis/portcullis/idp"
)

// RefusedQuietly asks p to judge r, which carries a hostile credential holding marker where a
// secret would be, as the chain would (Extract, then Verify against binding when the credential
// claims it, or Unknown; Declined too), and fails t unless r is refused with no error text,
// reason, message or challenge quoting marker: those go to the access log and to explain.
func RefusedQuietly(t *testing.T, p idp.Provider, binding idp.Binding, r *http.Request, marker string) {
	t.Helper()
	var texts []string
	note := func(err error) {
		if err == nil {
			return
		}
		texts = append(texts, err.Error())
		var d *idp.Denial
		if errors.As(err, &d) {
			texts = append(texts, d.Reason, d.Message, d.Challenge)
		}
	}
	cred, err := p.Extract(context.Background(), r)
	note(err)
	if cred != nil {
		if binding == nil || cred.Lookup != binding.Lookup() {
			note(p.Unknown())
		} else {
			note(p.Verify(context.Background(), r, cred, binding))
		}
	}
	if dc, ok := p.(idp.Decliner); ok {
		if d := dc.Declined(r); d != nil {
			note(d)
		}
	}
	if len(texts) == 0 {
		t.Fatalf("got the hostile credential accepted, want it refused")
	}
	for _, s := range texts {
		if strings.Contains(strings.ToLower(s), strings.ToLower(marker)) {
			t.Errorf("got %q, want no %q in it", s, marker)
		}
	}
}
