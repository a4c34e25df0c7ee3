package usage_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/keyledger/keyledger/events"
	"github.com/keyledger/keyledger/usage"
)

// memorySink is a Sink that records flushes, or fails them.
type memorySink struct {
	flushed [][]events.KeyUse
	fail    bool
}

func (m *memorySink) Flush(_ context.Context, uses []events.KeyUse) (events.FlushStats, error) {
	if m.fail {
		return events.FlushStats{}, errors.New("bucket unreachable")
	}
	m.flushed = append(m.flushed, uses)
	return events.FlushStats{Uses: len(uses), Messages: 1}, nil
}

func (m *memorySink) Watch(ctx context.Context, _ func(org, id string, at time.Time)) error {
	<-ctx.Done()
	return ctx.Err()
}

func TestTracker(t *testing.T) {
	at := time.Date(2026, 11, 27, 9, 30, 15, 0, time.UTC)
	minute := at.Truncate(time.Minute)
	ctx := context.Background()

	t.Run("TouchKeepsTheMinuteAndFlushesItOnce", func(t *testing.T) {
		u, sink := usage.New(), &memorySink{}
		for i := range 1000 {
			u.Touch("acme", "key_A", at.Add(time.Duration(i)*time.Millisecond))
		}
		if got := u.LastUsed("acme", "key_A"); !got.Equal(minute) {
			t.Errorf("LastUsed = %s, want %s", got, minute)
		}
		for range 2 {
			if _, err := u.Flush(ctx, sink); err != nil {
				t.Fatal(err)
			}
		}
		if len(sink.flushed) != 1 || len(sink.flushed[0]) != 1 || !sink.flushed[0][0].At.Equal(minute) {
			t.Errorf("flushed %v, want one entry for key_A at %s", sink.flushed, minute)
		}
	})

	t.Run("FailedFlushIsRetried", func(t *testing.T) {
		u, sink := usage.New(), &memorySink{fail: true}
		u.Touch("acme", "key_A", at)
		res, err := u.Flush(ctx, sink)
		if err == nil {
			t.Fatal("a failed flush reported no error")
		}
		if got, want := res.Carried, 1; got != want {
			t.Errorf("carried %d, want %d", got, want)
		}
		sink.fail = false
		if _, err := u.Flush(ctx, sink); err != nil || len(sink.flushed) != 1 {
			t.Errorf("retry flushed %v (%v), want the kept use", sink.flushed, err)
		}
	})

	t.Run("MergeKeepsTheLatest", func(t *testing.T) {
		u, sink := usage.New(), &memorySink{}
		u.Merge("acme", "key_A", minute.Add(time.Hour))
		u.Merge("acme", "key_A", minute)
		u.Touch("acme", "key_A", at) // older than what another instance saw
		if got := u.LastUsed("acme", "key_A"); !got.Equal(minute.Add(time.Hour)) {
			t.Errorf("LastUsed = %s, want the later remote use", got)
		}
		if _, err := u.Flush(ctx, sink); err != nil || len(sink.flushed) != 0 {
			t.Errorf("a use older than the shared one was flushed: %v", sink.flushed)
		}
		if !u.LastUsed("acme", "key_B").IsZero() {
			t.Error("an unused key has a last use")
		}
	})

	t.Run("FlushSendsAtMostItsBoundAndCarriesTheRest", func(t *testing.T) {
		u, sink := usage.New(), &memorySink{}
		u.MaxPerFlush = 300
		for i := range 1000 {
			u.Touch(fmt.Sprintf("org-%d", i%7), fmt.Sprintf("key_%04d", i), at)
		}
		var carried []int
		for range 4 {
			res, err := u.Flush(ctx, sink)
			if err != nil {
				t.Fatal(err)
			}
			if res.Uses > 300 {
				t.Errorf("a flush sent %d uses, over its bound of 300", res.Uses)
			}
			carried = append(carried, res.Carried)
		}
		if got, want := fmt.Sprint(carried), "[700 400 100 0]"; got != want {
			t.Errorf("carried %s, want %s", got, want)
		}
		sent := map[string]bool{}
		for _, f := range sink.flushed {
			for _, k := range f {
				sent[k.Org+"/"+k.ID] = true
			}
		}
		if got, want := len(sent), 1000; got != want {
			t.Errorf("%d distinct keys sent, want %d", got, want)
		}
		if st := u.Stats(); st.LastCarried != 0 || st.Flushed != 1000 {
			t.Errorf("stats %+v, want 1000 flushed and none left", st)
		}
	})

	t.Run("SnapshotForgetsUsesOlderThanItsCut", func(t *testing.T) {
		u := usage.New()
		u.Merge("acme", "key_old", minute.Add(-500*24*time.Hour))
		u.Merge("acme", "key_new", minute)
		got := u.Snapshot(minute.Add(-events.UsageRetention))
		if len(got) != 1 || got[0].ID != "key_new" {
			t.Errorf("snapshot %v, want key_new alone", got)
		}
		if !u.LastUsed("acme", "key_old").IsZero() {
			t.Error("a use older than the retention is still known")
		}
	})
}
