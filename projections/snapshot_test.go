package projections_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"testing"
	"time"

	"github.com/keyledger/keyledger/domain"
	"github.com/keyledger/keyledger/events"
	"github.com/keyledger/keyledger/internal/natstest"
	"github.com/keyledger/keyledger/projections"
)

var system = domain.Actor{Kind: domain.ActorSystem, ID: "test", Name: "test"}

// instance is a listing and an index fed by a runner, maybe from a snapshot.
type instance struct {
	listing *projections.Listing
	index   *projections.VerifyIndex
	snap    *projections.Snapshotter
	runner  *projections.Runner
	from    uint64 // the snapshot's sequence; 0: full replay
}

func startInstance(t *testing.T, env *natstest.Env, snaps *events.Snapshots, restore bool, every uint64) *instance {
	t.Helper()
	table := projections.NewTable()
	in := &instance{listing: table.Listing(), index: table.Index()}
	in.snap = &projections.Snapshotter{Store: snaps, Table: table, Every: every, Logger: natstest.Quiet()}
	in.runner = projections.NewRunner(env.Store, natstest.Quiet(), table, in.snap)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	if restore {
		var err error
		if in.from, err = in.snap.Restore(ctx); err != nil {
			t.Fatal(err)
		}
		in.runner.ResumeAfter(in.from)
	}
	go func() { _ = in.runner.Run(ctx) }()
	wctx, wcancel := context.WithTimeout(ctx, 20*time.Second)
	defer wcancel()
	if err := in.runner.WaitFor(wctx, env.LastSeq(t)); err != nil {
		t.Fatal(err)
	}
	return in
}

// state is what an instance answers: every org's listing and a verdict
// for every secret.
func (in *instance) state(orgs, secrets []string, now time.Time) string {
	var b bytes.Buffer
	for _, org := range orgs {
		page, _ := in.listing.List(org, projections.ListQuery{Status: "all", Limit: 10000, Now: now})
		for _, k := range page {
			if len(k.Scopes) == 0 {
				k.Scopes = nil // an empty list and no list show the same
			}
			fmt.Fprintf(&b, "%+v\n", k)
		}
	}
	for _, s := range secrets {
		r := in.index.Verify(s, now)
		fmt.Fprintf(&b, "%s %v %s %s\n", r.Code, r.Deprecated, r.ExpiresAt, r.Key.ID)
	}
	return b.String()
}

func history(t *testing.T, env *natstest.Env, n int) (orgs, secrets []string) {
	t.Helper()
	ctx := context.Background()
	keys := &domain.Keys{Store: env.Store}
	orgs = []string{"acme", "globex"}
	for i := range n {
		org := orgs[i%2]
		k, err := keys.Create(ctx, domain.CreateKey{OrgID: org, Name: fmt.Sprint("key ", i), Scopes: []string{"read"}, By: domain.SystemPrincipal(system.ID, system.Name)})
		if err != nil {
			t.Fatal(err)
		}
		secrets = append(secrets, k.Secret)
		switch i % 4 {
		case 1:
			r, err := keys.Rotate(ctx, org, k.Key.ID, domain.RotateKey{GracePeriod: time.Hour, By: domain.SystemPrincipal(system.ID, system.Name)})
			if err != nil {
				t.Fatal(err)
			}
			secrets = append(secrets, r.Secret)
		case 2:
			if _, err := keys.Revoke(ctx, org, k.Key.ID, domain.RevokeKey{By: domain.SystemPrincipal(system.ID, system.Name)}); err != nil {
				t.Fatal(err)
			}
		}
	}
	return orgs, secrets
}

func TestSnapshots(t *testing.T) {
	env := natstest.Start(t)
	ctx := context.Background()
	snaps, err := events.OpenSnapshots(ctx, env.JS, env.Store, 1)
	if err != nil {
		t.Fatal(err)
	}
	orgs, secrets := history(t, env, 40)
	first := startInstance(t, env, snaps, false, 1<<40)
	seq := env.LastSeq(t)
	hash, _ := snaps.MsgHash(ctx, seq)
	if err := first.snap.SaveNow(seq, hash); err != nil {
		t.Fatal(err)
	}
	_, moreSecrets := history(t, env, 12) // the tail after the snapshot
	secrets = append(secrets, moreSecrets...)
	now := time.Now()

	replayed := startInstance(t, env, snaps, false, 1<<40)
	want := replayed.state(orgs, secrets, now)

	t.Run("StartFromASnapshotEqualsAFullReplay", func(t *testing.T) {
		restored := startInstance(t, env, snaps, true, 1<<40)
		if restored.from != seq {
			t.Fatalf("restored from seq %d, want the snapshot's %d", restored.from, seq)
		}
		if got := restored.state(orgs, secrets, now); got != want {
			t.Errorf("from a snapshot:\n%s\nby full replay:\n%s", got, want)
		}
	})

	for _, tc := range []struct {
		name  string
		spoil func(t *testing.T)
	}{
		{"CorruptSnapshotFallsBack", func(t *testing.T) {
			if err := snaps.Put(ctx, bytes.NewReader([]byte("not a snapshot at all"))); err != nil {
				t.Fatal(err)
			}
		}},
		{"TruncatedSnapshotFallsBack", func(t *testing.T) {
			if err := first.snap.SaveNow(seq, hash); err != nil {
				t.Fatal(err)
			}
			rc, _ := snaps.Get(ctx)
			raw, _ := io.ReadAll(rc)
			rc.Close()
			if err := snaps.Put(ctx, bytes.NewReader(raw[:len(raw)/2])); err != nil {
				t.Fatal(err)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.spoil(t)
			restored := startInstance(t, env, snaps, true, 1<<40)
			if restored.from != 0 {
				t.Errorf("restored from seq %d, want a full replay", restored.from)
			}
			if got := restored.state(orgs, secrets, now); got != want {
				t.Error("after a spoilt snapshot the projections differ from a full replay")
			}
		})
	}
	// A snapshot signed by this deployment, taken at an event the stream
	// does not hold: the stream was written again. No replay: a refusal.
	t.Run("SignedSnapshotOfAnotherStreamRefusesToServe", func(t *testing.T) {
		if err := first.snap.SaveNow(seq, "a hash of some other stream"); err != nil {
			t.Fatal(err)
		}
		probe := &projections.Snapshotter{Store: snaps, Table: projections.NewTable(), Logger: natstest.Quiet()}
		if from, err := probe.Restore(ctx); !errors.Is(err, projections.ErrStreamRewritten) || from != 0 {
			t.Errorf("Restore = %d, %v; want ErrStreamRewritten", from, err)
		}
	})

	t.Run("SnapshotsAreTakenEverySoManyEvents", func(t *testing.T) {
		startInstance(t, env, snaps, false, 10)
		before := env.LastSeq(t)
		// Keep appending: a snapshot triggered while another is still being
		// saved waits for the next events, as in production.
		deadline := time.Now().Add(20 * time.Second)
		for {
			history(t, env, 12) // over ten more events while the instance follows
			probe := &projections.Snapshotter{Store: snaps, Table: projections.NewTable(), Logger: natstest.Quiet()}
			if got, err := probe.Restore(ctx); err != nil {
				t.Fatal(err)
			} else if got > before {
				break
			}
			if time.Now().After(deadline) {
				t.Fatal("no snapshot was taken while following the stream")
			}
			time.Sleep(50 * time.Millisecond)
		}
	})
}
