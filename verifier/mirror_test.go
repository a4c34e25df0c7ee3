package verifier

import (
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// TestMirrorCountsAsCurrentOnlyOnceSettled: a mirror's word that it heard
// from its origin counts once it has stayed in touch and caught up for
// mirrorSettle, and no more while it is silent, behind, or just back.
func TestMirrorCountsAsCurrentOnlyOnceSettled(t *testing.T) {
	t0 := time.Unix(1_000_000, 0)
	at := func(d time.Duration) time.Time { return t0.Add(d) }
	touch := &jetstream.StreamSourceInfo{Active: 100 * time.Millisecond}
	f := &feed{}

	f.observe(touch, at(0))
	if mirror, heard, _ := f.origin(); !mirror || !heard.IsZero() {
		t.Fatalf("first ask: mirror %v heard %v, want a mirror not yet vouched for", mirror, heard)
	}
	f.observe(touch, at(mirrorSettle))
	if _, heard, _ := f.origin(); !heard.Equal(at(mirrorSettle - 100*time.Millisecond)) {
		t.Fatalf("settled: heard %v, want %v", heard, at(mirrorSettle-100*time.Millisecond))
	}
	settled := at(mirrorSettle - 100*time.Millisecond)

	// Cut off: the mirror stops hearing; heard stays where it was.
	f.observe(&jetstream.StreamSourceInfo{Active: mirrorSilence + time.Second}, at(10*time.Second))
	if _, heard, _ := f.origin(); !heard.Equal(settled) {
		t.Fatalf("silent: heard %v, want it left at %v", heard, settled)
	}
	// Back, and saying it is caught up before the backlog has told it
	// otherwise: not believed until it has settled again.
	f.observe(touch, at(11*time.Second))
	if _, heard, _ := f.origin(); !heard.Equal(settled) {
		t.Fatalf("just back: heard %v, want it left at %v", heard, settled)
	}
	f.observe(&jetstream.StreamSourceInfo{Active: 10 * time.Millisecond, Lag: 3}, at(11*time.Second+200*time.Millisecond))
	if _, heard, lag := f.origin(); !heard.Equal(settled) || lag != 3 {
		t.Fatalf("behind: heard %v lag %d, want %v and 3", heard, lag, settled)
	}
	f.observe(touch, at(12*time.Second))
	f.observe(touch, at(12*time.Second+mirrorSettle))
	if _, heard, lag := f.origin(); !heard.Equal(at(12*time.Second+mirrorSettle-100*time.Millisecond)) || lag != 0 {
		t.Fatalf("settled again: heard %v lag %d", heard, lag)
	}

	// Never heard from (Active -1): not in touch.
	g := &feed{}
	g.observe(&jetstream.StreamSourceInfo{Active: -1}, at(0))
	g.observe(&jetstream.StreamSourceInfo{Active: -1}, at(time.Minute))
	if _, heard, _ := g.origin(); !heard.IsZero() {
		t.Fatalf("never heard from: heard %v", heard)
	}
	// Not a mirror at all.
	h := &feed{}
	h.observe(nil, at(0))
	if mirror, _, _ := h.origin(); mirror {
		t.Fatal("a stream of its own taken for a mirror")
	}
}
