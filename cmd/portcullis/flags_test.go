package main

import "testing"

func TestByteSizeFlag(t *testing.T) {
	tests := []struct {
		name, in string
		want     int64
		wantErr  bool
	}{
		{name: "bytes", in: "1048576", want: 1 << 20},
		{name: "KiB", in: "64KiB", want: 64 << 10},
		{name: "MiB", in: "512MiB", want: 512 << 20},
		{name: "GiB", in: "2GiB", want: 2 << 30},
		{name: "zero", in: "0", wantErr: true},
		{name: "negative", in: "-1MiB", wantErr: true},
		{name: "unknown unit", in: "5MB", wantErr: true},
		{name: "overflow", in: "9999999999GiB", wantErr: true},
		{name: "empty", in: "", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var b byteSize
			err := b.Set(tt.in)
			if (err != nil) != tt.wantErr {
				t.Fatalf("Set(%q): got error %v, want error %v", tt.in, err, tt.wantErr)
			}
			if !tt.wantErr && int64(b) != tt.want {
				t.Errorf("Set(%q): got %d, want %d", tt.in, b, tt.want)
			}
		})
	}
}

func FuzzByteSizeFlag(f *testing.F) {
	for _, s := range []string{"1", "512MiB", "1GiB", "-1", "KiB", "9223372036854775807", "8589934592GiB"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		var b byteSize
		if err := b.Set(s); err == nil && b <= 0 {
			t.Fatalf("Set(%q) accepted %d", s, b)
		}
	})
}
