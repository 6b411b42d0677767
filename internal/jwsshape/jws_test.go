package jwsshape

import (
	"testing"
)

func TestIsCompactJWS(t *testing.T) {
	tests := []struct {
		name           string
		s              string
		emptySignature bool
		want           bool
	}{
		{"three parts", "eyJh.eyJi.c2ln", false, true},
		{"url alphabet", "a-_Z.09xy.AB-_", false, true},
		{"empty signature refused", "eyJh.eyJi.", false, false},
		{"empty signature allowed", "eyJh.eyJi.", true, true},
		{"empty header", ".eyJi.c2ln", true, false},
		{"empty payload", "eyJh..c2ln", true, false},
		{"two parts", "eyJh.eyJi", true, false},
		{"four parts", "eyJh.eyJi.c2ln.eHh4", true, false},
		{"padding", "eyJh.eyJi.c2ln==", false, false},
		{"standard alphabet", "eyJh.ey+i.c2ln", false, false},
		{"space", "eyJh.eyJi.c2 n", false, false},
		{"opaque", "8f2b1c0d", true, false},
		{"empty", "", true, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := IsCompact(tt.s, tt.emptySignature); got != tt.want {
				t.Errorf("IsCompact(%q, %v) = %v, want %v", tt.s, tt.emptySignature, got, tt.want)
			}
		})
	}
}
