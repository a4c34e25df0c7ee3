package events_test

import (
	"context"
	"errors"
	"reflect"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/keyledger/keyledger/domain"
	"github.com/keyledger/keyledger/events"
	"github.com/keyledger/keyledger/internal/natstest"
)

// storeActor is who appends in these tests.
var storeActor = domain.Actor{Kind: domain.ActorUser, ID: "u_7", Name: "Store Tester"}

// storeBy is storeActor signed in as a manager of the orgs these tests use.
var storeBy = domain.PersonPrincipal(storeActor.ID, storeActor.Name, map[string]string{"acme": domain.RoleManager, "globex": domain.RoleManager, "initech": domain.RoleManager, "acme-co": domain.RoleManager})

// testCtx ends with the test, and at most after 20 seconds.
func testCtx(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// mintCreated is the KeyCreated event of a new key of org, decided at codecAt.
func mintCreated(t *testing.T, org string) domain.Event {
	t.Helper()
	secret, err := domain.GenerateSecret(domain.DefaultPrefix, nil)
	if err != nil {
		t.Fatal(err)
	}
	e, err := domain.DecideCreate(domain.CreateKey{OrgID: org, Name: "ci", Scopes: []string{"read"}, By: storeBy}, codecAt, 0, secret)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// mustCreate appends a new key of org and returns its stored event.
func mustCreate(t *testing.T, s *events.Store, org string) domain.Event {
	t.Helper()
	e, err := s.Create(testCtx(t), mintCreated(t, org))
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	return e
}

// rotateNow decides a rotation without grace.
func rotateNow(k *domain.Key) ([]domain.Event, error) {
	secret, err := domain.GenerateSecret(domain.DefaultPrefix, nil)
	if err != nil {
		return nil, err
	}
	e, err := k.DecideRotate(domain.RotateKey{By: storeBy}, codecAt.Add(time.Minute), secret)
	return []domain.Event{e}, err
}

func revokeNow(k *domain.Key) ([]domain.Event, error) {
	e, err := k.DecideRevoke(domain.RevokeKey{Reason: "test", By: storeBy}, codecAt.Add(2*time.Minute))
	return []domain.Event{e}, err
}

func mustLoad(t *testing.T, s *events.Store, org, id string) []domain.Event {
	t.Helper()
	evs, err := s.Load(testCtx(t), org, id)
	if err != nil {
		t.Fatalf("Load(%s, %s): %v", org, id, err)
	}
	return evs
}

func wantErrorCode(t *testing.T, err error, code string) {
	t.Helper()
	if got := domain.ErrorCode(err); got != code {
		t.Fatalf("error code = %q (err: %v), want %q", got, err, code)
	}
}

// unmoved fails the test if the stream grew past last.
func unmoved(t *testing.T, env *natstest.Env, last uint64) {
	t.Helper()
	if got := env.LastSeq(t); got != last {
		t.Fatalf("stream last seq = %d, want %d: something was appended", got, last)
	}
}

func TestStoreOpen(t *testing.T) {
	env := natstest.Start(t)
	ctx := testCtx(t)
	created := mustCreate(t, env.Store, "acme")
	stream, err := env.JS.Stream(ctx, events.StreamName)
	if err != nil {
		t.Fatal(err)
	}

	t.Run("StreamIsFileStoredAndDeniesDeleteAndPurge", func(t *testing.T) {
		info, err := stream.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		cfg := info.Config
		if got, want := cfg.Name, "KEYLEDGER"; got != want {
			t.Errorf("Name = %q, want %q", got, want)
		}
		// keyledger.checkpoints: the signed checkpoints (README).
		if got, want := cfg.Subjects, []string{"keyledger.events.>", "keyledger.checkpoints"}; !reflect.DeepEqual(got, want) {
			t.Errorf("Subjects = %q, want %q", got, want)
		}
		if got, want := cfg.Storage, jetstream.FileStorage; got != want {
			t.Errorf("Storage = %v, want %v", got, want)
		}
		if !cfg.DenyDelete || !cfg.DenyPurge {
			t.Errorf("DenyDelete, DenyPurge = %v, %v; want true, true", cfg.DenyDelete, cfg.DenyPurge)
		}
		if cfg.Duplicates <= 0 {
			t.Errorf("Duplicates = %v, want a duplicate window", cfg.Duplicates)
		}
	})

	t.Run("OpeningTwiceKeepsStreamAndEvents", func(t *testing.T) {
		before := env.LastSeq(t)
		again, err := events.Open(ctx, env.JS, env.Config(natstest.Quiet()))
		if err != nil {
			t.Fatalf("second Open: %v", err)
		}
		if got := mustLoad(t, again, "acme", created.KeyID); !reflect.DeepEqual(got, []domain.Event{created}) {
			t.Errorf("Load through the second store = %+v, want %+v", got, created)
		}
		unmoved(t, env, before)
	})

	t.Run("DeletingAMessageIsRefused", func(t *testing.T) {
		if err := stream.DeleteMsg(ctx, created.Seq); err == nil {
			t.Error("DeleteMsg succeeded")
		}
		if err := stream.SecureDeleteMsg(ctx, created.Seq); err == nil {
			t.Error("SecureDeleteMsg succeeded")
		}
		if _, err := stream.GetMsg(ctx, created.Seq); err != nil {
			t.Errorf("the event is gone: %v", err)
		}
	})

	t.Run("PurgingIsRefused", func(t *testing.T) {
		before := env.LastSeq(t)
		if err := stream.Purge(ctx); err == nil {
			t.Error("Purge succeeded")
		}
		if err := stream.Purge(ctx, jetstream.WithPurgeSubject(events.KeySubjects("acme", created.KeyID))); err == nil {
			t.Error("Purge of one key's subjects succeeded")
		}
		info, err := stream.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if got, want := info.State.Msgs, before; got != want {
			t.Errorf("stream holds %d messages, want %d", got, want)
		}
		if got := mustLoad(t, env.Store, "acme", created.KeyID); len(got) != 1 {
			t.Errorf("Load = %d events, want 1", len(got))
		}
	})
}

func TestStoreCreate(t *testing.T) {
	env := natstest.Start(t)
	ctx := testCtx(t)

	t.Run("LoadReturnsTheEventWithItsSeq", func(t *testing.T) {
		e := mintCreated(t, "acme")
		e.PrevHash = "ignored: a first event has none"
		created, err := env.Store.Create(ctx, e)
		if err != nil {
			t.Fatal(err)
		}
		if got, want := created.Seq, env.LastSeq(t); got != want {
			t.Errorf("Seq = %d, want the stream's last %d", got, want)
		}
		if created.PrevHash != "" || created.Hash == "" {
			t.Errorf("PrevHash, Hash = %q, %q; want empty, set", created.PrevHash, created.Hash)
		}
		want := e
		want.PrevHash, want.Seq, want.Hash, want.Trusted = "", created.Seq, created.Hash, true
		if !reflect.DeepEqual(created, want) {
			t.Errorf("Create:\n got %+v\nwant %+v", created, want)
		}
		if got := mustLoad(t, env.Store, "acme", e.KeyID); !reflect.DeepEqual(got, []domain.Event{created}) {
			t.Errorf("Load:\n got %+v\nwant [%+v]", got, created)
		}
	})

	t.Run("MessageIsOnTheKeySubjectWithTheEventIDAsMsgID", func(t *testing.T) {
		created := mustCreate(t, env.Store, "acme")
		stream, err := env.JS.Stream(ctx, events.StreamName)
		if err != nil {
			t.Fatal(err)
		}
		m, err := stream.GetMsg(ctx, created.Seq)
		if err != nil {
			t.Fatal(err)
		}
		if got, want := m.Subject, "keyledger.events.acme."+created.KeyID+".created"; got != want {
			t.Errorf("subject = %q, want %q", got, want)
		}
		if got, want := m.Header.Get(nats.MsgIdHdr), created.ID; got != want {
			t.Errorf("Nats-Msg-Id = %q, want %q", got, want)
		}
		body, err := events.Encode(created)
		if err != nil {
			t.Fatal(err)
		}
		if got, want := string(m.Data), string(body); got != want {
			t.Errorf("body = %s, want %s", got, want)
		}
		if got, want := events.BodyHash(m.Data), created.Hash; got != want {
			t.Errorf("BodyHash = %s, want %s", got, want)
		}
	})

	t.Run("SecondCreateOfAKeyIsConflict", func(t *testing.T) {
		first := mustCreate(t, env.Store, "acme")
		before := env.LastSeq(t)
		second := mintCreated(t, "acme")
		second.KeyID = first.KeyID
		_, err := env.Store.Create(ctx, second)
		wantErrorCode(t, err, domain.ECONFLICT)
		unmoved(t, env, before)
	})

	t.Run("UnknownKeyLoadsNoEvents", func(t *testing.T) {
		if got := mustLoad(t, env.Store, "acme", domain.NewKeyID()); len(got) != 0 {
			t.Errorf("Load = %+v, want none", got)
		}
	})

	for _, tt := range []struct{ name, org, key string }{
		{"DotInOrg", "ac.me", domain.NewKeyID()},
		{"StarOrg", "*", domain.NewKeyID()},
		{"GreaterThanOrg", ">", domain.NewKeyID()},
		{"SpaceInOrg", "ac me", domain.NewKeyID()},
		{"StarKey", "acme", "*"},
		{"GreaterThanKey", "acme", ">"},
		{"NotAULIDKey", "acme", "key_123"},
		{"DotInKey", "acme", "key_01ARZ3NDEKTSV4RRFFQ69G5FAV.x"},
	} {
		t.Run(tt.name+"IsInvalidAndAppendsNothing", func(t *testing.T) {
			before := env.LastSeq(t)
			e := mintCreated(t, "acme")
			e.OrgID, e.KeyID = tt.org, tt.key
			_, err := env.Store.Create(ctx, e)
			wantErrorCode(t, err, domain.EINVALID)
			_, err = env.Store.Load(ctx, tt.org, tt.key)
			wantErrorCode(t, err, domain.EINVALID)
			unmoved(t, env, before)
		})
	}
}

func TestStoreConflict(t *testing.T) {
	env := natstest.Start(t)
	ctx := testCtx(t)
	created := mustCreate(t, env.Store, "acme")
	if _, err := env.Store.Update(ctx, "acme", created.KeyID, rotateNow); err != nil {
		t.Fatal(err)
	}
	body, err := events.Encode(mintCreated(t, "acme")) // any body: the server judges the headers
	if err != nil {
		t.Fatal(err)
	}
	subject := events.Subject("acme", created.KeyID, domain.TypeKeyRevoked)

	t.Run("StaleExpectedSequenceIsConflict", func(t *testing.T) {
		before := env.LastSeq(t)
		_, err := env.JS.Publish(ctx, subject, body,
			jetstream.WithExpectLastSequenceForSubject(created.Seq, events.KeySubjects("acme", created.KeyID)))
		if !events.IsConflict(err) {
			t.Fatalf("IsConflict(%v) = false, want true", err)
		}
		unmoved(t, env, before)
	})

	t.Run("ExpectingNoEventOfAnExistingKeyIsConflict", func(t *testing.T) {
		_, err := env.JS.Publish(ctx, subject, body,
			jetstream.WithExpectLastSequenceForSubject(0, events.KeySubjects("acme", created.KeyID)))
		if !events.IsConflict(err) {
			t.Fatalf("IsConflict(%v) = false, want true", err)
		}
	})

	t.Run("CurrentExpectedSequenceIsAccepted", func(t *testing.T) {
		// The control for the two above: the same publish, up to date.
		ack, err := env.JS.Publish(ctx, "keyledger.events.acme."+domain.NewKeyID()+".created", body,
			jetstream.WithExpectLastSequenceForSubject(0, events.KeySubjects("acme", domain.NewKeyID())))
		if err != nil || events.IsConflict(err) {
			t.Fatalf("Publish = %v, %v; want accepted", ack, err)
		}
	})

	t.Run("OtherErrorsAreNoConflict", func(t *testing.T) {
		for _, err := range []error{nil, errors.New("wrong last sequence"), context.DeadlineExceeded, nats.ErrTimeout} {
			if events.IsConflict(err) {
				t.Errorf("IsConflict(%v) = true, want false", err)
			}
		}
	})
}

func TestStoreUpdate(t *testing.T) {
	env := natstest.Start(t)
	ctx := testCtx(t)

	t.Run("AppendsAndReturnsTheKeyWithTheNewVersion", func(t *testing.T) {
		created := mustCreate(t, env.Store, "acme")
		var seen domain.Key
		k, err := env.Store.Update(ctx, "acme", created.KeyID, func(k *domain.Key) ([]domain.Event, error) {
			seen = *k
			return rotateNow(k)
		})
		if err != nil {
			t.Fatal(err)
		}
		if got, want := seen.Version, created.Seq; got != want {
			t.Errorf("fn saw Version %d, want %d", got, want)
		}
		if got, want := seen.ID, created.KeyID; got != want {
			t.Errorf("fn saw key %q, want %q", got, want)
		}
		if got, want := k.Version, env.LastSeq(t); got != want {
			t.Errorf("Version = %d, want the stream's last seq %d", got, want)
		}
		if k.RotatedAt.IsZero() || k.SecretHash == seen.SecretHash || k.PreviousSecretHash != seen.SecretHash {
			t.Errorf("returned key does not hold the rotation: %+v", k)
		}
		evs := mustLoad(t, env.Store, "acme", created.KeyID)
		if got, want := len(evs), 2; got != want {
			t.Fatalf("%d events stored, want %d", got, want)
		}
		if got, want := evs[1].PrevHash, evs[0].Hash; got != want {
			t.Errorf("PrevHash = %q, want the first event's hash %q", got, want)
		}
		rebuilt, err := domain.Rebuild(evs)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(rebuilt, k) {
			t.Errorf("returned key:\n got %+v\nwant %+v (rebuilt from the stream)", k, rebuilt)
		}
	})

	t.Run("FnSeesEveryEarlierEvent", func(t *testing.T) {
		created := mustCreate(t, env.Store, "acme")
		if _, err := env.Store.Update(ctx, "acme", created.KeyID, rotateNow); err != nil {
			t.Fatal(err)
		}
		k, err := env.Store.Update(ctx, "acme", created.KeyID, revokeNow)
		if err != nil {
			t.Fatal(err)
		}
		if !k.Revoked || k.RotatedAt.IsZero() {
			t.Errorf("key = %+v, want rotated and revoked", k)
		}
		_, err = env.Store.Update(ctx, "acme", created.KeyID, rotateNow)
		wantErrorCode(t, err, domain.EKEYREVOKED)
	})

	t.Run("FnErrorIsReturnedAndNothingAppended", func(t *testing.T) {
		created := mustCreate(t, env.Store, "acme")
		before := env.LastSeq(t)
		refused := errors.New("refused")
		k, err := env.Store.Update(ctx, "acme", created.KeyID, func(*domain.Key) ([]domain.Event, error) { return nil, refused })
		if !errors.Is(err, refused) {
			t.Fatalf("err = %v, want %v", err, refused)
		}
		if k != nil {
			t.Errorf("key = %+v with an error, want nil", k)
		}
		unmoved(t, env, before)
	})

	t.Run("UnknownKeyIsNotFound", func(t *testing.T) {
		before := env.LastSeq(t)
		_, err := env.Store.Update(ctx, "acme", domain.NewKeyID(), func(*domain.Key) ([]domain.Event, error) {
			t.Error("fn called for an unknown key")
			return nil, nil
		})
		wantErrorCode(t, err, domain.ENOTFOUND)
		unmoved(t, env, before)
	})

	t.Run("KeyOfAnotherOrgIsNotFound", func(t *testing.T) {
		created := mustCreate(t, env.Store, "acme")
		_, err := env.Store.Update(ctx, "globex", created.KeyID, rotateNow)
		wantErrorCode(t, err, domain.ENOTFOUND)
	})

	existing := mustCreate(t, env.Store, "acme")
	for _, tt := range []struct{ name, org, key string }{
		{"DotInOrg", "ac.me", existing.KeyID},
		{"StarOrg", "*", existing.KeyID},
		{"GreaterThanOrg", ">", existing.KeyID},
		{"EmptyOrg", "", existing.KeyID},
		{"StarKey", "acme", "*"},
		{"GreaterThanKey", "acme", ">"},
		{"WildcardTailKey", "acme", existing.KeyID + ".>"},
		{"EmptyKey", "acme", ""},
	} {
		t.Run(tt.name+"IsInvalidAndAppendsNothing", func(t *testing.T) {
			before := env.LastSeq(t)
			_, err := env.Store.Update(ctx, tt.org, tt.key, func(*domain.Key) ([]domain.Event, error) {
				t.Error("fn called for invalid ids")
				return nil, nil
			})
			wantErrorCode(t, err, domain.EINVALID)
			unmoved(t, env, before)
		})
	}
}

func TestStoreReloadsIdenticalEventsAfterRestart(t *testing.T) {
	dir := t.TempDir()
	env := natstest.StartIn(t, dir)
	ctx := testCtx(t)
	a := mustCreate(t, env.Store, "acme")
	b := mustCreate(t, env.Store, "globex")
	for _, step := range []func(*domain.Key) ([]domain.Event, error){rotateNow, rotateNow, revokeNow} {
		if _, err := env.Store.Update(ctx, "acme", a.KeyID, step); err != nil {
			t.Fatal(err)
		}
	}
	beforeA, beforeB := mustLoad(t, env.Store, "acme", a.KeyID), mustLoad(t, env.Store, "globex", b.KeyID)
	last := env.LastSeq(t)
	env.Stop()

	again := natstest.StartIn(t, dir)
	if got, want := again.LastSeq(t), last; got != want {
		t.Errorf("last seq after restart = %d, want %d", got, want)
	}
	if got := mustLoad(t, again.Store, "acme", a.KeyID); !reflect.DeepEqual(got, beforeA) {
		t.Errorf("after restart:\n got %+v\nwant %+v", got, beforeA)
	}
	if got := mustLoad(t, again.Store, "globex", b.KeyID); !reflect.DeepEqual(got, beforeB) {
		t.Errorf("after restart:\n got %+v\nwant %+v", got, beforeB)
	}
	k, err := again.Store.Update(ctx, "globex", b.KeyID, rotateNow)
	if err != nil {
		t.Fatalf("Update after restart: %v", err)
	}
	if got, want := k.Version, last+1; got != want {
		t.Errorf("Version after restart = %d, want %d", got, want)
	}
	if evs := mustLoad(t, again.Store, "globex", b.KeyID); evs[1].PrevHash != beforeB[0].Hash {
		t.Errorf("the chain broke across the restart")
	}
}

func TestStoreFollow(t *testing.T) {
	env := natstest.Start(t)
	ctx := testCtx(t)
	var appended []domain.Event
	for range 3 {
		e := mustCreate(t, env.Store, "acme")
		appended = append(appended, e)
		if _, err := env.Store.Update(ctx, "acme", e.KeyID, rotateNow); err != nil {
			t.Fatal(err)
		}
		appended = append(appended, mustLoad(t, env.Store, "acme", e.KeyID)[1])
	}
	errEnough := errors.New("enough")
	// follow collects n events from seq from on.
	follow := func(t *testing.T, from uint64, n int) []domain.Event {
		t.Helper()
		var got []domain.Event
		err := env.Store.Follow(ctx, from, func(e domain.Event) error {
			got = append(got, e)
			if len(got) == n {
				return errEnough
			}
			return nil
		})
		if !errors.Is(err, errEnough) {
			t.Fatalf("Follow = %v, want fn's error", err)
		}
		return got
	}

	t.Run("DeliversEveryEventInOrderFromTheStart", func(t *testing.T) {
		if got := follow(t, 1, len(appended)); !reflect.DeepEqual(got, appended) {
			t.Errorf("followed:\n got %+v\nwant %+v", got, appended)
		}
	})

	t.Run("SequenceZeroMeansTheStart", func(t *testing.T) {
		if got := follow(t, 0, 1); got[0].Seq != appended[0].Seq {
			t.Errorf("first seq = %d, want %d", got[0].Seq, appended[0].Seq)
		}
	})

	t.Run("StartsAtTheGivenSequence", func(t *testing.T) {
		if got, want := follow(t, appended[3].Seq, 3), appended[3:]; !reflect.DeepEqual(got, want) {
			t.Errorf("followed:\n got %+v\nwant %+v", got, want)
		}
	})

	t.Run("ResumesFromALaterSequenceAndSeesNewAppends", func(t *testing.T) {
		first := follow(t, 1, 2)
		fctx, cancel := context.WithCancel(ctx)
		defer cancel()
		got := make(chan domain.Event, 16)
		done := make(chan error, 1)
		go func() {
			done <- env.Store.Follow(fctx, first[len(first)-1].Seq+1, func(e domain.Event) error {
				got <- e
				return nil
			})
		}()
		want := append([]domain.Event{}, appended[2:]...)
		want = append(want, mustCreate(t, env.Store, "acme"), mustCreate(t, env.Store, "globex"))
		for i, w := range want {
			select {
			case e := <-got:
				if !reflect.DeepEqual(e, w) {
					t.Fatalf("event %d:\n got %+v\nwant %+v", i, e, w)
				}
			case <-time.After(5 * time.Second):
				t.Fatalf("event %d (seq %d) was not delivered", i, w.Seq)
			}
		}
		cancel()
		select {
		case err := <-done:
			if !errors.Is(err, context.Canceled) {
				t.Errorf("Follow after cancel = %v, want %v", err, context.Canceled)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("Follow did not end with its context")
		}
	})
}
