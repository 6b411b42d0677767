package expiring

import (
	"testing"
	"time"
)

func TestMap(t *testing.T) {
	t0 := time.Unix(1_800_000_000, 0)
	tests := []struct {
		name string
		run  func(m *Map[string, int]) (got int, ok bool)
		want int
		ok   bool
	}{
		{"live entry", func(m *Map[string, int]) (int, bool) {
			m.Put("a", 1, t0.Add(time.Minute), t0)
			return m.Get("a", t0.Add(time.Second))
		}, 1, true},
		{"expired entry", func(m *Map[string, int]) (int, bool) {
			m.Put("a", 1, t0.Add(time.Minute), t0)
			return m.Get("a", t0.Add(time.Minute))
		}, 0, false},
		{"full map of live entries evicts on Put", func(m *Map[string, int]) (int, bool) {
			m.Put("a", 1, t0.Add(time.Hour), t0)
			m.Put("b", 2, t0.Add(time.Hour), t0)
			m.Put("c", 3, t0.Add(time.Hour), t0)
			return m.Get("c", t0)
		}, 3, true},
		{"AddIfAbsent keeps a live entry", func(m *Map[string, int]) (int, bool) {
			m.Put("a", 1, t0.Add(time.Hour), t0)
			if added, _ := m.AddIfAbsent("a", 2, t0.Add(time.Hour), t0); added {
				return -1, true
			}
			return m.Get("a", t0)
		}, 1, true},
		{"AddIfAbsent on a full map of live entries stores nothing", func(m *Map[string, int]) (int, bool) {
			m.Put("a", 1, t0.Add(time.Hour), t0)
			m.Put("b", 2, t0.Add(time.Hour), t0)
			if added, full := m.AddIfAbsent("c", 3, t0.Add(time.Hour), t0); added || !full {
				return -1, true
			}
			return m.Get("c", t0)
		}, 0, false},
		{"AddIfAbsent sweeps expired entries when full", func(m *Map[string, int]) (int, bool) {
			m.Put("a", 1, t0.Add(time.Second), t0)
			m.Put("b", 2, t0.Add(time.Second), t0)
			later := t0.Add(2 * time.Second)
			if added, full := m.AddIfAbsent("c", 3, later.Add(time.Hour), later); !added || full {
				return -1, true
			}
			return m.Get("c", later)
		}, 3, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := tt.run(New[string, int](2))
			if got != tt.want || ok != tt.ok {
				t.Errorf("got %d, %v; want %d, %v", got, ok, tt.want, tt.ok)
			}
		})
	}
}
