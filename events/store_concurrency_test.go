package events_test

import (
	"reflect"
	"sync"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/keyledger/keyledger/domain"
	"github.com/keyledger/keyledger/events"
	"github.com/keyledger/keyledger/internal/natstest"
)

func TestStoreDeduplication(t *testing.T) {
	env := natstest.Start(t)
	ctx := testCtx(t)
	publish := func(e domain.Event, opts ...jetstream.PublishOpt) (*jetstream.PubAck, error) {
		body, err := events.Encode(e)
		if err != nil {
			t.Fatal(err)
		}
		msg := &nats.Msg{Subject: events.Subject(e.OrgID, e.KeyID, e.Type), Data: body}
		env.Signer.SignEvent(msg)
		return env.JS.PublishMsg(ctx, msg, append([]jetstream.PublishOpt{jetstream.WithMsgID(e.ID)}, opts...)...)
	}

	// What the server does: it judges the expected sequence before the
	// message id, so a retried append answers "wrong last sequence", not
	// "duplicate". Either way the stream holds the event once.
	t.Run("ServerAnswersARetryWithExpectedSequenceAsConflict", func(t *testing.T) {
		e := mintCreated(t, "acme")
		expect := jetstream.WithExpectLastSequenceForSubject(0, events.KeySubjects(e.OrgID, e.KeyID))
		first, err := publish(e, expect)
		if err != nil {
			t.Fatal(err)
		}
		_, err = publish(e, expect)
		if !events.IsConflict(err) {
			t.Fatalf("retry: IsConflict(%v) = false, want true", err)
		}
		if got := mustLoad(t, env.Store, e.OrgID, e.KeyID); len(got) != 1 || got[0].Seq != first.Sequence {
			t.Fatalf("stream holds %+v, want the event once at seq %d", got, first.Sequence)
		}
	})

	t.Run("ServerAnswersARetryWithoutExpectationAsDuplicate", func(t *testing.T) {
		e := mintCreated(t, "acme")
		first, err := publish(e)
		if err != nil {
			t.Fatal(err)
		}
		again, err := publish(e)
		if err != nil {
			t.Fatal(err)
		}
		if !again.Duplicate || again.Sequence != first.Sequence {
			t.Fatalf("retry ack = %+v, want a duplicate of seq %d", again, first.Sequence)
		}
		if got := mustLoad(t, env.Store, e.OrgID, e.KeyID); len(got) != 1 {
			t.Fatalf("stream holds %d copies, want 1", len(got))
		}
	})

	t.Run("RetriedCreateReturnsTheStoredEvent", func(t *testing.T) {
		e := mintCreated(t, "acme")
		first, err := env.Store.Create(ctx, e)
		if err != nil {
			t.Fatal(err)
		}
		before := env.LastSeq(t)
		again, err := env.Store.Create(ctx, e)
		if err != nil {
			t.Fatalf("retry: %v", err)
		}
		if !reflect.DeepEqual(again, first) {
			t.Errorf("retry = %+v, want %+v", again, first)
		}
		unmoved(t, env, before)
		if got := mustLoad(t, env.Store, e.OrgID, e.KeyID); len(got) != 1 {
			t.Fatalf("stream holds %d copies, want 1", len(got))
		}
	})

	t.Run("RetryAfterTheKeyMovedOnReturnsTheStoredEvent", func(t *testing.T) {
		e := mintCreated(t, "acme")
		first, err := env.Store.Create(ctx, e)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := env.Store.Update(ctx, e.OrgID, e.KeyID, rotateNow); err != nil {
			t.Fatal(err)
		}
		before := env.LastSeq(t)
		again, err := env.Store.Create(ctx, e)
		if err != nil {
			t.Fatalf("late retry: %v", err)
		}
		if got, want := again.Seq, first.Seq; got != want {
			t.Errorf("late retry Seq = %d, want %d", got, want)
		}
		unmoved(t, env, before)
	})
}

// TestStoreConcurrentUpdatesLoseNoUpdate races 20 rotations of one key:
// each succeeds or conflicts, and the stream holds exactly the successes.
// With one attempt per Update most of them conflict; with the default
// retries most succeed.
func TestStoreConcurrentUpdatesLoseNoUpdate(t *testing.T) {
	for _, tt := range []struct {
		name      string
		conflicts int
	}{
		{"DefaultRetries", 0},
		{"NoRetry", 1},
	} {
		t.Run(tt.name, func(t *testing.T) {
			env := natstest.Start(t)
			ctx := testCtx(t)
			cfg := env.Config(natstest.Quiet())
			cfg.Conflicts = tt.conflicts
			store, err := events.Open(ctx, env.JS, cfg)
			if err != nil {
				t.Fatal(err)
			}
			created := mustCreate(t, store, "acme")
			successes, versions := raceRotations(t, store, created.KeyID, 20)

			evs := mustLoad(t, store, "acme", created.KeyID)
			rotations := 0
			for i, e := range evs {
				if e.Type == domain.TypeKeyRotated {
					rotations++
				}
				if i > 0 && e.PrevHash != evs[i-1].Hash {
					t.Errorf("event %d (seq %d) is not chained to the one before", i, e.Seq)
				}
			}
			if got, want := rotations, successes; got != want {
				t.Errorf("%d KeyRotated events stored, want %d (the successes)", got, want)
			}
			if successes == 0 {
				t.Error("no rotation succeeded")
			}
			k, err := domain.Rebuild(evs)
			if err != nil {
				t.Fatal(err)
			}
			stream, err := env.JS.Stream(ctx, events.StreamName)
			if err != nil {
				t.Fatal(err)
			}
			last, err := stream.GetLastMsgForSubject(ctx, events.KeySubjects("acme", created.KeyID))
			if err != nil {
				t.Fatal(err)
			}
			if got, want := k.Version, last.Sequence; got != want {
				t.Errorf("rebuilt Version = %d, want the key's last subject sequence %d", got, want)
			}
			if !versions[k.Version] {
				t.Errorf("rebuilt Version %d was returned by no successful update", k.Version)
			}
		})
	}
}

// raceRotations rotates key n times at once and returns how many
// succeeded and the versions they returned; any error but ECONFLICT fails.
func raceRotations(t *testing.T, store *events.Store, key string, n int) (int, map[uint64]bool) {
	t.Helper()
	ctx := testCtx(t)
	var (
		wg        sync.WaitGroup
		mu        sync.Mutex
		successes int
		versions  = map[uint64]bool{}
	)
	start := make(chan struct{})
	for range n {
		wg.Go(func() {
			<-start
			k, err := store.Update(ctx, "acme", key, rotateNow)
			switch domain.ErrorCode(err) {
			case "":
				mu.Lock()
				defer mu.Unlock()
				successes++
				if versions[k.Version] {
					t.Errorf("two successful updates returned Version %d", k.Version)
				}
				versions[k.Version] = true
			case domain.ECONFLICT:
			default:
				t.Errorf("Update: %v, want success or conflict", err)
			}
		})
	}
	close(start)
	wg.Wait()
	t.Logf("%d of %d concurrent rotations succeeded", successes, n)
	return successes, versions
}
