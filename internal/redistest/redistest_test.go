package redistest

import "testing"

func TestStartStopRestart(t *testing.T) {
	s := Start(t)
	if err := ping(s.Addr); err != nil {
		t.Fatalf("ping after Start: got %v, want nil", err)
	}
	s.Stop()
	if err := ping(s.Addr); err == nil {
		t.Fatal("ping after Stop: got nil, want an error")
	}
	s.Restart()
	if err := ping(s.Addr); err != nil {
		t.Fatalf("ping after Restart: got %v, want nil", err)
	}
}
