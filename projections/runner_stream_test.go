package projections_test

import (
	"context"
	"errors"
	"reflect"
	"testing"
	"time"

	"github.com/keyledger/keyledger/domain"
	"github.com/keyledger/keyledger/internal/natstest"
	"github.com/keyledger/keyledger/projections"
)

// running is a Runner following a real stream into a listing and an index.
type running struct {
	runner  *projections.Runner
	listing *projections.Listing
	index   *projections.VerifyIndex
	stop    context.CancelFunc
	done    chan error // Run's result
}

// startRunner runs a fresh Runner on env's store until stopped or the test ends.
func startRunner(t *testing.T, env *natstest.Env) *running {
	t.Helper()
	r := &running{listing: projections.NewListing(), index: projections.NewVerifyIndex(), done: make(chan error, 1)}
	r.runner = projections.NewRunner(env.Store, natstest.Quiet(), r.listing, r.index)
	ctx, cancel := context.WithCancel(context.Background())
	r.stop = cancel
	go func() { r.done <- r.runner.Run(ctx) }()
	t.Cleanup(func() { r.halt(t) })
	return r
}

// halt stops the runner and returns what Run returned.
func (r *running) halt(t *testing.T) error {
	t.Helper()
	r.stop()
	select {
	case err := <-r.done:
		r.done <- err // for a later halt
		return err
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not end with its context")
		return nil
	}
}

// waitFor is Runner.WaitFor with a deadline, failing the test on error.
func (r *running) waitFor(t *testing.T, seq uint64) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := r.runner.WaitFor(ctx, seq); err != nil {
		t.Fatalf("WaitFor(%d): %v (applied %d)", seq, err, r.runner.Applied())
	}
}

// waitReady polls Ready until a deadline.
func (r *running) waitReady(t *testing.T) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); !r.runner.Ready(); {
		if time.Now().After(deadline) {
			t.Fatalf("not ready after 5s (applied %d)", r.runner.Applied())
		}
		time.Sleep(time.Millisecond)
	}
}

func newKeys(env *natstest.Env) *domain.Keys {
	return &domain.Keys{Store: env.Store, Now: func() time.Time { return base }}
}

func mustCreateKey(t *testing.T, keys *domain.Keys, org string) domain.Issued {
	t.Helper()
	issued, err := keys.Create(context.Background(), domain.CreateKey{OrgID: org, Name: "ci " + org, Scopes: []string{"read"}, By: managerBy})
	if err != nil {
		t.Fatal(err)
	}
	return issued
}

func mustRotateKey(t *testing.T, keys *domain.Keys, k *domain.Key, grace time.Duration) domain.Issued {
	t.Helper()
	issued, err := keys.Rotate(context.Background(), k.OrgID, k.ID, domain.RotateKey{GracePeriod: grace, By: managerBy})
	if err != nil {
		t.Fatal(err)
	}
	return issued
}

func mustRevokeKey(t *testing.T, keys *domain.Keys, k *domain.Key) *domain.Key {
	t.Helper()
	revoked, err := keys.Revoke(context.Background(), k.OrgID, k.ID, domain.RevokeKey{By: managerBy})
	if err != nil {
		t.Fatal(err)
	}
	return revoked
}

func TestRunner(t *testing.T) {
	env := natstest.Start(t)
	keys := newKeys(env)
	a := mustCreateKey(t, keys, "acme")
	b := mustCreateKey(t, keys, "acme")
	aNew := mustRotateKey(t, keys, a.Key, 0)
	bRevoked := mustRevokeKey(t, keys, b.Key)
	last := env.LastSeq(t)

	fresh := projections.NewRunner(env.Store, natstest.Quiet())
	if fresh.Ready() || fresh.Applied() != 0 {
		t.Fatalf("a runner not yet run: Ready %v, Applied %d; want false, 0", fresh.Ready(), fresh.Applied())
	}

	r := startRunner(t, env)

	t.Run("AppliesEventsAppendedBeforeRunAndBecomesReady", func(t *testing.T) {
		r.waitFor(t, last)
		r.waitReady(t)
		if got, want := r.runner.Applied(), last; got != want {
			t.Errorf("Applied = %d, want %d", got, want)
		}
		for _, p := range []projections.Projection{r.listing, r.index} {
			if got, want := p.LastSeq(), last; got != want {
				t.Errorf("%T.LastSeq() = %d, want %d", p, got, want)
			}
		}
		if got, want := mustGet(t, r.listing, "acme", a.Key.ID), *aNew.Key; !reflect.DeepEqual(got, want) {
			t.Errorf("rotated key:\n got %+v\nwant %+v", got, want)
		}
		if got, want := mustGet(t, r.listing, "acme", b.Key.ID), *bRevoked; !reflect.DeepEqual(got, want) {
			t.Errorf("revoked key:\n got %+v\nwant %+v", got, want)
		}
		for _, tt := range []struct {
			secret, code string
		}{
			{aNew.Secret, domain.VerifyValid},
			{a.Secret, domain.VerifyExpired},
			{b.Secret, domain.VerifyRevoked},
		} {
			if got := r.index.Verify(tt.secret, base).Code; got != tt.code {
				t.Errorf("Verify(%s) = %s, want %s", domain.MaskSecret(tt.secret), got, tt.code)
			}
		}
		behind, err := r.runner.Behind(context.Background())
		if err != nil || behind != 0 {
			t.Errorf("Behind = %d, %v; want 0", behind, err)
		}
	})

	t.Run("WaitForReturnsOnceALaterAppendIsApplied", func(t *testing.T) {
		c := mustCreateKey(t, keys, "globex")
		r.waitFor(t, c.Key.Version)
		if got, want := mustGet(t, r.listing, "globex", c.Key.ID), *c.Key; !reflect.DeepEqual(got, want) {
			t.Errorf("new key:\n got %+v\nwant %+v", got, want)
		}
		if got := r.index.Verify(c.Secret, base); got.Code != domain.VerifyValid || got.Key.ID != c.Key.ID {
			t.Errorf("Verify(new key) = %+v, want VALID for %s", got, c.Key.ID)
		}
	})

	t.Run("WaitForWithACancelledContextReturnsItsError", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		if err := r.runner.WaitFor(ctx, env.LastSeq(t)+100); !errors.Is(err, context.Canceled) {
			t.Errorf("WaitFor = %v, want %v", err, context.Canceled)
		}
	})

	t.Run("WaitForPastTheStreamEndsWithTheDeadline", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
		defer cancel()
		if err := r.runner.WaitFor(ctx, env.LastSeq(t)+1); !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("WaitFor = %v, want %v", err, context.DeadlineExceeded)
		}
	})

	t.Run("WaitForAnAppliedSeqReturnsAtOnce", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		if err := r.runner.WaitFor(ctx, last); err != nil {
			t.Errorf("WaitFor(applied seq) = %v, want nil", err)
		}
	})

	t.Run("RunEndsWithTheContextError", func(t *testing.T) {
		if err := r.halt(t); !errors.Is(err, context.Canceled) {
			t.Errorf("Run = %v, want %v", err, context.Canceled)
		}
	})
}

func TestRunnerOnAnEmptyStreamIsReadyAtOnce(t *testing.T) {
	env := natstest.Start(t)
	r := startRunner(t, env)
	r.waitReady(t)
	if got := r.runner.Applied(); got != 0 {
		t.Errorf("Applied = %d, want 0", got)
	}
	k := mustCreateKey(t, newKeys(env), "acme")
	r.waitFor(t, k.Key.Version)
	if _, ok := r.listing.Get("acme", k.Key.ID); !ok {
		t.Error("the first key is not listed")
	}
}

// snapshot is everything the projections answer about a set of keys.
type snapshot struct {
	Lists    map[string][]domain.Key
	Next     map[string]string
	Keys     map[string]domain.Key
	Verdicts map[string]projections.Result
}

func takeSnapshot(t *testing.T, r *running, orgs []string, issued []domain.Issued, secrets []string, now time.Time) snapshot {
	t.Helper()
	s := snapshot{Lists: map[string][]domain.Key{}, Next: map[string]string{}, Keys: map[string]domain.Key{}, Verdicts: map[string]projections.Result{}}
	for _, org := range orgs {
		for _, status := range []string{"", "all", "revoked"} {
			s.Lists[org+"?"+status] = mustList(t, r.listing, org, status, now)
		}
		page, next := r.listing.List(org, projections.ListQuery{Status: "all", Limit: 2, Now: now})
		s.Lists[org+"?limit=2"], s.Next[org] = page, next
	}
	for _, is := range issued {
		s.Keys[is.Key.ID] = mustGet(t, r.listing, is.Key.OrgID, is.Key.ID)
	}
	for _, secret := range secrets {
		s.Verdicts[secret] = r.index.Verify(secret, now)
	}
	return s
}

func TestRunnerRebuildsIdenticalProjectionsAfterRestart(t *testing.T) {
	dir := t.TempDir()
	env := natstest.StartIn(t, dir)
	keys := newKeys(env)
	var issued []domain.Issued
	var secrets []string
	for _, org := range []string{"acme", "acme", "acme", "globex", "globex"} {
		is := mustCreateKey(t, keys, org)
		issued, secrets = append(issued, is), append(secrets, is.Secret)
	}
	secrets = append(secrets,
		mustRotateKey(t, keys, issued[0].Key, time.Hour).Secret,
		mustRotateKey(t, keys, issued[3].Key, 0).Secret,
		mustRotateKey(t, keys, issued[1].Key, time.Hour).Secret,
	)
	mustRevokeKey(t, keys, issued[1].Key)
	mustRevokeKey(t, keys, issued[4].Key)
	// An event of a type this code does not know, as a newer version writes it.
	renamed := `{"event_id":"` + domain.NewEventID() + `","type":"KeyRenamed","schema_version":2,"org_id":"acme","key_id":"` +
		issued[2].Key.ID + `","occurred_at":"2026-11-26T10:05:00.000000Z","actor":{"kind":"user","id":"u_1","name":"x"},"data":{"name":"new"}}`
	if _, err := env.JS.Publish(context.Background(), "keyledger.events.acme."+issued[2].Key.ID+".renamed", []byte(renamed)); err != nil {
		t.Fatal(err)
	}
	unknown, _ := domain.GenerateSecret(domain.DefaultPrefix, nil)
	secrets = append(secrets, unknown, "c8k_malformed")
	last := env.LastSeq(t)
	orgs := []string{"acme", "globex", "initech"}
	now := base.Add(time.Minute) // within the grace periods

	r := startRunner(t, env)
	r.waitFor(t, last)
	before := takeSnapshot(t, r, orgs, issued, secrets, now)
	if got, want := len(before.Lists["acme?all"]), 3; got != want {
		t.Fatalf("acme lists %d keys before the restart, want %d", got, want)
	}
	if got, want := before.Keys[issued[2].Key.ID], *issued[2].Key; !reflect.DeepEqual(got, want) {
		t.Errorf("the key with an unknown event:\n got %+v\nwant %+v", got, want)
	}
	if err := r.halt(t); !errors.Is(err, context.Canceled) {
		t.Errorf("Run = %v, want %v", err, context.Canceled)
	}
	env.Stop()

	again := natstest.StartIn(t, dir)
	r2 := startRunner(t, again)
	r2.waitFor(t, last)
	r2.waitReady(t)
	after := takeSnapshot(t, r2, orgs, issued, secrets, now)
	for name, pair := range map[string][2]any{
		"lists": {before.Lists, after.Lists}, "next cursors": {before.Next, after.Next},
		"keys": {before.Keys, after.Keys}, "verdicts": {before.Verdicts, after.Verdicts},
	} {
		if !reflect.DeepEqual(pair[0], pair[1]) {
			t.Errorf("%s differ after the restart:\n got %+v\nwant %+v", name, pair[1], pair[0])
		}
	}
	if got, want := r2.runner.Applied(), last; got != want {
		t.Errorf("Applied after the restart = %d, want %d", got, want)
	}

	k := mustCreateKey(t, newKeys(again), "acme")
	r2.waitFor(t, k.Key.Version)
	if got, want := k.Key.Version, last+1; got != want {
		t.Errorf("first append after the restart at seq %d, want %d", got, want)
	}
	if got := r2.index.Verify(k.Secret, now).Code; got != domain.VerifyValid {
		t.Errorf("key created after the restart verifies %s, want VALID", got)
	}
}
