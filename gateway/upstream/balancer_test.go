package upstream

import (
	"net/url"
	"strings"
	"testing"
	"time"
)

func TestBalancerPassesOverDownTargets(t *testing.T) {
	now := time.Unix(1_000_000, 0)
	newTargets := func(weights ...int) []*Target {
		var ts []*Target
		for i, w := range weights {
			ts = append(ts, &Target{URL: &url.URL{Host: string(rune('a' + i))}, Weight: w})
		}
		return ts
	}
	picks := func(b *Balancer, n int, at time.Time) string {
		var s strings.Builder
		for range n {
			s.WriteString(b.Next(at).URL.Host)
		}
		return s.String()
	}
	tests := []struct {
		name    string
		weights []int
		down    []int // indexes marked down at now
		at      time.Duration
		want    string
	}{
		{name: "weights 3/1", weights: []int{3, 1}, want: "aabaaaba"},
		{name: "a down", weights: []int{3, 1}, down: []int{0}, want: "bbbbbbbb"},
		{name: "a down, fail timeout over", weights: []int{3, 1}, down: []int{0}, at: FailTimeout, want: "aabaaaba"},
		{name: "all down: every one is tried", weights: []int{1, 1}, down: []int{0, 1}, want: "abab"},
		{name: "one of three down", weights: []int{1, 1, 1}, down: []int{1}, want: "acacac"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ts := newTargets(tt.weights...)
			for _, i := range tt.down {
				ts[i].MarkDown(now)
			}
			if got := picks(NewBalancer(ts), len(tt.want), now.Add(tt.at)); got != tt.want {
				t.Errorf("got %s, want %s", got, tt.want)
			}
		})
	}
}
