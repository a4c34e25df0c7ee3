package projections

import (
	"math/rand/v2"
	"testing"
)

// TestHashIndexDeleteKeepsEveryOtherMapping puts and deletes at random,
// on an index kept crowded so that probe runs are long and wrap around,
// and checks every mapping against a map after each step.
func TestHashIndexDeleteKeepsEveryOtherMapping(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	h := newHashIndex(0)
	want := map[uint64]uint32{}
	var keys []uint64
	for step := range 20000 {
		switch {
		case len(keys) < 700 && rng.IntN(3) > 0:
			k := rng.Uint64N(5000) // repeats: put replaces
			if _, ok := want[k]; !ok {
				keys = append(keys, k)
			}
			want[k] = uint32(step)
			h.put(k, uint32(step))
		case len(keys) > 0:
			i := rng.IntN(len(keys))
			k := keys[i]
			keys[i] = keys[len(keys)-1]
			keys = keys[:len(keys)-1]
			delete(want, k)
			h.del(k)
			h.del(k) // twice: the second finds nothing
		}
		if h.len() != len(want) {
			t.Fatalf("step %d: %d mappings, want %d", step, h.len(), len(want))
		}
		if step%97 == 0 {
			for k, slot := range want {
				if got, ok := h.get(k); !ok || got != slot {
					t.Fatalf("step %d: get(%d) = %d, %v; want %d", step, k, got, ok, slot)
				}
			}
			if _, ok := h.get(5000 + uint64(step)); ok {
				t.Fatalf("step %d: a key never put is found", step)
			}
		}
	}
}
