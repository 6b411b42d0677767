package gateway

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// TestExplainGroupLimitNamesTheGroup: explain says which group's counter a group limit uses.
func TestExplainGroupLimitNamesTheGroup(t *testing.T) {
	gw, _ := newTestGateway(t, `{
  "idps": [ { "name": "keys", "type": "key-auth" } ],
  "consumer_groups": [ { "name": "bots", "plugins": { "limit-count": { "count": 100, "time_window": 60 } } } ],
  "consumers": [ { "username": "bot", "group": "bots", "idps": [ { "idp": "keys", "key": "bot-key" } ] } ],
  "routes": [ { "name": "r", "paths": ["/r"], "upstream": { "targets": [ { "url": "%s" } ] } } ]
}`, nil)
	r := httptest.NewRequest(http.MethodGet, "/r", nil)
	r.Header.Set("apikey", "bot-key")
	e := gw.Explain(r)
	want := `limit-count 100 per 1m0s of group:bots applies, counted by group "bots"`
	for _, s := range e.Steps {
		if s.Phase == "limit" && strings.HasPrefix(s.Detail, want) {
			return
		}
	}
	t.Errorf("explain steps: got %+v, want a limit step starting %q", e.Steps, want)
}
