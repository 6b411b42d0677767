package idp

import "testing"

func TestIsIdentityHeader(t *testing.T) {
	tests := []struct {
		name string
		want bool
	}{
		{"X-Consumer-Username", true},
		{"x-consumer-custom-id", true},
		{"X-Credential-Identifier", true},
		{"x-userinfo", true},
		{"X-Access-Token", true},
		{"X-Id-Token", true},
		{"X-Consumer", false},
		{"Authorization", false},
		{"apikey", false},
		{"", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := IsIdentityHeader(tt.name); got != tt.want {
				t.Errorf("IsIdentityHeader(%q): got %v, want %v", tt.name, got, tt.want)
			}
		})
	}
}
