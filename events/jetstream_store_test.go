package events_test

import (
	"context"
	"errors"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/keyledger/keyledger/domain"
	"github.com/keyledger/keyledger/events"
	"github.com/keyledger/keyledger/internal/natstest"
)

var system = domain.Actor{Kind: domain.ActorSystem, ID: "test", Name: "test"}

func newKeyEvent(t *testing.T, org string) domain.Event {
	t.Helper()
	secret, err := domain.GenerateSecret(domain.DefaultPrefix, nil)
	if err != nil {
		t.Fatal(err)
	}
	e, err := domain.DecideCreate(domain.CreateKey{OrgID: org, Name: "k", Actor: system}, time.Now().UTC().Truncate(time.Microsecond), 0, secret)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func rotate(k *domain.Key) ([]domain.Event, error) {
	secret, _ := domain.GenerateSecret(domain.DefaultPrefix, nil)
	e, err := k.DecideRotate(domain.RotateKey{Actor: system}, time.Now().UTC().Truncate(time.Microsecond), secret)
	return []domain.Event{e}, err
}

func TestJetStreamStoreStream(t *testing.T) {
	env := natstest.Start(t)
	ctx := context.Background()
	info, err := env.JS.Stream(ctx, events.StreamName)
	if err != nil {
		t.Fatal(err)
	}
	cfg := info.CachedInfo().Config
	if cfg.Storage != jetstream.FileStorage || !cfg.DenyDelete || !cfg.DenyPurge || !reflect.DeepEqual(cfg.Subjects, []string{"keyledger.events.>", "keyledger.checkpoints"}) {
		t.Errorf("stream config = %+v", cfg)
	}
	if _, err := events.Open(ctx, env.JS, events.Config{}); err != nil {
		t.Errorf("opening an existing stream again: %v", err)
	}
	e, err := env.Store.Create(ctx, newKeyEvent(t, "acme"))
	if err != nil {
		t.Fatal(err)
	}
	if err := info.DeleteMsg(ctx, e.Seq); err == nil {
		t.Error("the server deleted an event")
	}
	if err := info.Purge(ctx); err == nil {
		t.Error("the server purged the stream")
	}
	m, err := info.GetMsg(ctx, e.Seq)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := m.Subject, "keyledger.events.acme."+e.KeyID+".created"; got != want {
		t.Errorf("subject = %s, want %s", got, want)
	}
	if got := m.Header.Get(nats.MsgIdHdr); got != e.ID {
		t.Errorf("Nats-Msg-Id = %q, want the event id %s", got, e.ID)
	}
}

func TestJetStreamStoreAppend(t *testing.T) {
	env := natstest.Start(t)
	ctx := context.Background()

	t.Run("CreateThenLoadGivesTheEventWithItsSeq", func(t *testing.T) {
		e, err := env.Store.Create(ctx, newKeyEvent(t, "acme"))
		if err != nil {
			t.Fatal(err)
		}
		got, err := env.Store.Load(ctx, "acme", e.KeyID)
		if err != nil || len(got) != 1 || got[0].Seq != e.Seq || got[0].ID != e.ID || got[0].Hash != e.Hash || got[0].PrevHash != "" {
			t.Errorf("Load = %+v, %v; want %+v", got, err, e)
		}
	})

	t.Run("SecondCreateOfAKeyIsConflict", func(t *testing.T) {
		e, err := env.Store.Create(ctx, newKeyEvent(t, "acme"))
		if err != nil {
			t.Fatal(err)
		}
		again := newKeyEvent(t, "acme")
		again.KeyID = e.KeyID
		before := env.LastSeq(t)
		if _, err := env.Store.Create(ctx, again); domain.ErrorCode(err) != domain.ECONFLICT {
			t.Errorf("err = %v, want conflict", err)
		}
		if env.LastSeq(t) != before {
			t.Error("the refused append moved the stream")
		}
	})

	t.Run("StaleExpectedSequenceIsConflict", func(t *testing.T) {
		e, _ := env.Store.Create(ctx, newKeyEvent(t, "acme"))
		if _, err := env.Store.Update(ctx, "acme", e.KeyID, rotate); err != nil {
			t.Fatal(err)
		}
		body, _ := events.Encode(e)
		_, err := env.JS.Publish(ctx, events.Subject("acme", e.KeyID, domain.TypeKeyRevoked), body,
			jetstream.WithExpectLastSequenceForSubject(e.Seq, events.KeySubjects("acme", e.KeyID)))
		if !events.IsConflict(err) {
			t.Errorf("err = %v, want a wrong-last-sequence conflict", err)
		}
	})

	t.Run("RetriedAppendIsStoredOnce", func(t *testing.T) {
		e := newKeyEvent(t, "acme")
		first, err := env.Store.Create(ctx, e)
		if err != nil {
			t.Fatal(err)
		}
		before := env.LastSeq(t)
		again, err := env.Store.Create(ctx, e) // the same event id: Nats-Msg-Id
		if err != nil || again.Seq != first.Seq {
			t.Errorf("retry = seq %d, %v; want the first seq %d", again.Seq, err, first.Seq)
		}
		if env.LastSeq(t) != before {
			t.Error("the retry was stored twice")
		}
	})

	t.Run("UpdateChainsAndReturnsTheNewVersion", func(t *testing.T) {
		e, _ := env.Store.Create(ctx, newKeyEvent(t, "acme"))
		k, err := env.Store.Update(ctx, "acme", e.KeyID, rotate)
		if err != nil || k.Version <= e.Seq || k.RotatedAt.IsZero() {
			t.Fatalf("Update = %+v, %v", k, err)
		}
		evs, _ := env.Store.Load(ctx, "acme", e.KeyID)
		if len(evs) != 2 || evs[1].PrevHash != evs[0].Hash || evs[1].Seq != k.Version {
			t.Errorf("events = %+v, want the rotation chained to the creation", evs)
		}
	})

	t.Run("RefusedDecisionAppendsNothing", func(t *testing.T) {
		e, _ := env.Store.Create(ctx, newKeyEvent(t, "acme"))
		before := env.LastSeq(t)
		refuse := errors.New("no")
		if _, err := env.Store.Update(ctx, "acme", e.KeyID, func(*domain.Key) ([]domain.Event, error) { return nil, refuse }); !errors.Is(err, refuse) {
			t.Errorf("err = %v", err)
		}
		if _, err := env.Store.Update(ctx, "acme", domain.NewKeyID(), rotate); domain.ErrorCode(err) != domain.ENOTFOUND {
			t.Errorf("unknown key: %v", err)
		}
		for _, ids := range [][2]string{{"ac.me", e.KeyID}, {"acme", "key_*"}, {"acme", ">"}} {
			if _, err := env.Store.Update(ctx, ids[0], ids[1], rotate); domain.ErrorCode(err) != domain.EINVALID {
				t.Errorf("Update(%q, %q) = %v, want invalid", ids[0], ids[1], err)
			}
		}
		if env.LastSeq(t) != before {
			t.Error("the stream moved")
		}
	})
}

// TestJetStreamStoreConcurrentUpdatesLoseNothing races 20 rotations: each
// succeeds or conflicts, and the stream holds exactly the successes.
func TestJetStreamStoreConcurrentUpdatesLoseNothing(t *testing.T) {
	env := natstest.Start(t)
	ctx := context.Background()
	e, _ := env.Store.Create(ctx, newKeyEvent(t, "acme"))
	var wg sync.WaitGroup
	var mu sync.Mutex
	ok := 0
	for range 20 {
		wg.Go(func() {
			_, err := env.Store.Update(ctx, "acme", e.KeyID, rotate)
			switch domain.ErrorCode(err) {
			case "":
				mu.Lock()
				ok++
				mu.Unlock()
			case domain.ECONFLICT:
			default:
				t.Error(err)
			}
		})
	}
	wg.Wait()
	evs, _ := env.Store.Load(ctx, "acme", e.KeyID)
	k, err := domain.Rebuild(evs)
	if err != nil || len(evs) != ok+1 || k.Version != evs[len(evs)-1].Seq {
		t.Errorf("%d acknowledged, %d rotations stored (%v)", ok, len(evs)-1, err)
	}
	for i := 1; i < len(evs); i++ {
		if evs[i].PrevHash != evs[i-1].Hash {
			t.Errorf("event %d is not chained to the one before", i)
		}
	}
}

func TestJetStreamStoreReloadsAfterRestart(t *testing.T) {
	dir := t.TempDir()
	env := natstest.StartIn(t, dir)
	ctx := context.Background()
	e, _ := env.Store.Create(ctx, newKeyEvent(t, "acme"))
	if _, err := env.Store.Update(ctx, "acme", e.KeyID, rotate); err != nil {
		t.Fatal(err)
	}
	before, _ := env.Store.Load(ctx, "acme", e.KeyID)
	env.Stop()
	again := natstest.StartIn(t, dir)
	after, err := again.Store.Load(ctx, "acme", e.KeyID)
	if err != nil || !reflect.DeepEqual(before, after) {
		t.Errorf("after a restart:\n%+v\nwant\n%+v (%v)", after, before, err)
	}
}

func TestJetStreamStoreFollowsInOrderFromASequence(t *testing.T) {
	env := natstest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var want []uint64
	for range 5 {
		e, _ := env.Store.Create(ctx, newKeyEvent(t, "acme"))
		want = append(want, e.Seq)
	}
	var got []uint64
	err := env.Store.Follow(ctx, want[2], func(e domain.Event) error {
		got = append(got, e.Seq)
		if len(got) == 3 {
			return errors.New("enough")
		}
		return nil
	})
	if err == nil || !reflect.DeepEqual(got, want[2:]) {
		t.Errorf("followed %v, want %v", got, want[2:])
	}
}

func TestJetStreamStoreOrgEventsPageFromTheStream(t *testing.T) {
	env := natstest.Start(t)
	ctx := context.Background()
	var acme []domain.Event
	for i := range 5 {
		e, _ := env.Store.Create(ctx, newKeyEvent(t, "acme"))
		acme = append(acme, e)
		if i%2 == 0 {
			if _, err := env.Store.Create(ctx, newKeyEvent(t, "globex")); err != nil {
				t.Fatal(err)
			}
		}
	}
	page, next, more, err := env.Store.OrgEvents(ctx, "acme", 0, 3, domain.EventFilter{})
	if err != nil || len(page) != 3 || next != acme[2].Seq || !more {
		t.Fatalf("first page: %d events, next %d, more %v, %v", len(page), next, more, err)
	}
	page, next, more, _ = env.Store.OrgEvents(ctx, "acme", next, 3, domain.EventFilter{})
	if len(page) != 2 || page[0].ID != acme[3].ID || next != acme[4].Seq || more {
		t.Errorf("second page: %d events, next %d, more %v", len(page), next, more)
	}
	page, _, _, _ = env.Store.OrgEvents(ctx, "acme", 0, 10, domain.EventFilter{KeyID: acme[1].KeyID})
	if len(page) != 1 || page[0].KeyID != acme[1].KeyID {
		t.Errorf("filtered by key: %+v", page)
	}
	if _, _, _, err := env.Store.OrgEvents(ctx, "ac.me", 0, 10, domain.EventFilter{}); domain.ErrorCode(err) != domain.EINVALID {
		t.Errorf("bad org: %v", err)
	}
}
