package events_test

import (
	"strings"
	"testing"
	"time"

	"github.com/keyledger/keyledger/domain"
	"github.com/keyledger/keyledger/events"
	"github.com/keyledger/keyledger/internal/natstest"
)

// asks calls LastSeq n times and returns the last error.
func asks(t *testing.T, s *events.Store, n int) error {
	t.Helper()
	var err error
	for range n {
		_, err = s.LastSeq(testCtx(t))
	}
	return err
}

func TestStreamLost(t *testing.T) {
	t.Run("TheSameStreamIsNotLost", func(t *testing.T) {
		env := natstest.Start(t)
		if err := asks(t, env.Store, 5); err != nil {
			t.Fatal(err)
		}
		if got := env.Store.StreamLost(); got != "" {
			t.Errorf("StreamLost = %q on the stream it opened", got)
		}
	})
	t.Run("ADeletedStreamIsLostForGood", func(t *testing.T) {
		env := natstest.Start(t)
		cfg := streamConfig(t, env)
		if err := env.JS.DeleteStream(testCtx(t), events.StreamName); err != nil {
			t.Fatal(err)
		}
		if err := asks(t, env.Store, 1); err == nil || env.Store.StreamLost() != "" {
			t.Errorf("one answer 'not found' is a verdict already (err %v, lost %q); want three in a row", err, env.Store.StreamLost())
		}
		err := asks(t, env.Store, 2)
		if got, want := env.Store.StreamLost(), events.StreamDeleted; got != want {
			t.Fatalf("StreamLost = %q, want %q", got, want)
		}
		if domain.ErrorCode(err) != domain.EUNAVAILABLE || !strings.Contains(err.Error(), "deleted") {
			t.Errorf("LastSeq on a deleted stream: %v", err)
		}
		// Someone makes it again, as keyledger would: it is not the history
		// this store applied.
		if _, err := env.JS.CreateStream(testCtx(t), cfg); err != nil {
			t.Fatal(err)
		}
		if err := asks(t, env.Store, 3); err == nil || env.Store.StreamLost() != events.StreamDeleted {
			t.Errorf("after the stream was made again: LastSeq %v, StreamLost %q; want still lost", err, env.Store.StreamLost())
		}
	})
	t.Run("AStreamReplacedBetweenTwoAsksIsLost", func(t *testing.T) {
		env := natstest.Start(t)
		if err := asks(t, env.Store, 1); err != nil {
			t.Fatal(err)
		}
		natstest.Recreate(t, testCtx(t), env.JS, streamConfig(t, env))
		err := asks(t, env.Store, 1)
		if got, want := env.Store.StreamLost(), events.StreamReplaced; got != want {
			t.Fatalf("StreamLost = %q, want %q", got, want)
		}
		if err == nil {
			t.Error("LastSeq answers on a replaced stream")
		}
	})
	t.Run("TheRunnerStopsBeingReady", func(t *testing.T) {
		env := natstest.Start(t)
		_, runner := follow(t, env.Store)
		if !runner.Ready() || runner.Broken() != "" {
			t.Fatalf("ready %v, broken %q before the delete", runner.Ready(), runner.Broken())
		}
		if err := env.JS.DeleteStream(testCtx(t), events.StreamName); err != nil {
			t.Fatal(err)
		}
		got := within(15*time.Second, runner.Broken, func(s string) bool { return s != "" })
		if got != events.StreamDeleted || runner.Ready() {
			t.Errorf("runner after the delete: broken %q, ready %v; want %q and not ready", got, runner.Ready(), events.StreamDeleted)
		}
	})
}
