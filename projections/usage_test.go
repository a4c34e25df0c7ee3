package projections_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/keyledger/keyledger/projections"
)

// memorySink is a UsageSink that records flushes, or fails them.
type memorySink struct {
	flushed []map[string]time.Time
	fail    bool
}

func (m *memorySink) Flush(_ context.Context, uses map[string]time.Time) error {
	if m.fail {
		return errors.New("bucket unreachable")
	}
	m.flushed = append(m.flushed, uses)
	return nil
}

func (m *memorySink) Watch(ctx context.Context, _ func(org, id string, at time.Time)) error {
	<-ctx.Done()
	return ctx.Err()
}

func TestUsage(t *testing.T) {
	at := time.Date(2026, 11, 27, 9, 30, 15, 0, time.UTC)
	minute := at.Truncate(time.Minute)
	ctx := context.Background()

	t.Run("TouchKeepsTheMinuteAndFlushesItOnce", func(t *testing.T) {
		u, sink := projections.NewUsage(), &memorySink{}
		for i := range 1000 {
			u.Touch("acme", "key_A", at.Add(time.Duration(i)*time.Millisecond))
		}
		if got := u.LastUsed("acme", "key_A"); !got.Equal(minute) {
			t.Errorf("LastUsed = %s, want %s", got, minute)
		}
		if err := u.Flush(ctx, sink); err != nil {
			t.Fatal(err)
		}
		if err := u.Flush(ctx, sink); err != nil {
			t.Fatal(err)
		}
		if len(sink.flushed) != 1 || len(sink.flushed[0]) != 1 || !sink.flushed[0]["acme/key_A"].Equal(minute) {
			t.Errorf("flushed %v, want one entry for key_A at %s", sink.flushed, minute)
		}
	})

	t.Run("FailedFlushIsRetried", func(t *testing.T) {
		u, sink := projections.NewUsage(), &memorySink{fail: true}
		u.Touch("acme", "key_A", at)
		if err := u.Flush(ctx, sink); err == nil {
			t.Fatal("a failed flush reported no error")
		}
		sink.fail = false
		if err := u.Flush(ctx, sink); err != nil || len(sink.flushed) != 1 {
			t.Errorf("retry flushed %v (%v), want the kept use", sink.flushed, err)
		}
	})

	t.Run("MergeKeepsTheLatest", func(t *testing.T) {
		u, sink := projections.NewUsage(), &memorySink{}
		u.Merge("acme", "key_A", minute.Add(time.Hour))
		u.Merge("acme", "key_A", minute)
		u.Touch("acme", "key_A", at) // older than what another instance saw
		if got := u.LastUsed("acme", "key_A"); !got.Equal(minute.Add(time.Hour)) {
			t.Errorf("LastUsed = %s, want the later remote use", got)
		}
		if err := u.Flush(ctx, sink); err != nil || len(sink.flushed) != 0 {
			t.Errorf("a use older than the shared one was flushed: %v", sink.flushed)
		}
		if !u.LastUsed("acme", "key_B").IsZero() {
			t.Error("an unused key has a last use")
		}
	})
}
