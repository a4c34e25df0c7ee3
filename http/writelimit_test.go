package http

import (
	"testing"
	"time"
)

// TestWriteBudgets: a burst, then one token per 1/rate; a token given
// back is spendable again, never past the burst; a bucket left to fill up
// is forgotten, which changes nothing.
func TestWriteBudgets(t *testing.T) {
	now := time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC)
	b := newWriteBudgets(Limit{Per: 60, Every: time.Minute}, func() time.Time { return now })
	for i := range 60 {
		if ok, _ := b.take("key:A"); !ok {
			t.Fatalf("write %d of a burst of 60 refused", i+1)
		}
	}
	ok, retry := b.take("key:A")
	if ok || retry != time.Second {
		t.Fatalf("the 61st write: %v, retry %s; want refused, retry 1s", ok, retry)
	}
	if ok, _ := b.take("key:B"); !ok {
		t.Fatal("another credential was refused")
	}
	b.give("key:A")
	if ok, _ := b.take("key:A"); !ok {
		t.Fatal("a token given back cannot be spent")
	}
	now = now.Add(1500 * time.Millisecond)
	if ok, _ := b.take("key:A"); !ok {
		t.Fatal("no token after 1.5 s")
	}
	if ok, retry := b.take("key:A"); ok || retry != 500*time.Millisecond {
		t.Fatalf("a second token after 1.5 s: %v, retry %s; want refused, retry 500ms", ok, retry)
	}
	for range 5 {
		b.give("key:B")
	}
	now = now.Add(2 * time.Minute) // both full again, and forgotten at the next look
	b.take("key:C")
	if len(b.buckets) != 1 {
		t.Errorf("%d buckets kept, want only the one just used", len(b.buckets))
	}
	for i := range 60 {
		if ok, _ := b.take("key:A"); !ok {
			t.Fatalf("after a rest, write %d of 60 refused", i+1)
		}
	}
	if ok, _ := b.take("key:A"); ok {
		t.Fatal("a rested bucket holds more than its burst")
	}
	if newWriteBudgets(Limit{}, time.Now) != nil {
		t.Error("a zero Limit limits")
	}
}
