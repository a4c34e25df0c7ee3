package events_test

import (
	"context"
	"reflect"
	"testing"
	"time"

	"github.com/keyledger/keyledger/domain"
	"github.com/keyledger/keyledger/internal/natstest"
)

// staleCache always answers with the state it was given, however old.
type staleCache map[string]domain.Key

func (c staleCache) Get(org, id string) (domain.Key, bool) {
	k, ok := c[org+"/"+id]
	return k, ok
}

func TestUpdateDecidesOnTheCacheAndFallsBackWhenItIsStale(t *testing.T) {
	env := natstest.Start(t)
	ctx := context.Background()
	keys := &domain.Keys{Store: env.Store}
	created, err := keys.Create(ctx, domain.CreateKey{OrgID: "acme", Name: "k", By: domain.SystemPrincipal(system.ID, system.Name)})
	if err != nil {
		t.Fatal(err)
	}
	evs, _ := env.Store.Load(ctx, "acme", created.Key.ID)
	fresh, _ := domain.Rebuild(evs) // with LastHash, as the projections hold it
	cache := staleCache{"acme/" + created.Key.ID: *fresh}
	env.Store.UseCache(cache)

	first, err := keys.Rotate(ctx, "acme", created.Key.ID, domain.RotateKey{By: domain.SystemPrincipal(system.ID, system.Name)})
	if err != nil {
		t.Fatalf("rotate on a current cache: %v", err)
	}
	// The cache now lags by one event: the append must conflict and the
	// stream's state decide instead, with no lost update.
	second, err := keys.Rotate(ctx, "acme", created.Key.ID, domain.RotateKey{By: domain.SystemPrincipal(system.ID, system.Name)})
	if err != nil {
		t.Fatalf("rotate on a stale cache: %v", err)
	}
	// A condition that only the stream's state satisfies.
	third, err := keys.Rotate(ctx, "acme", created.Key.ID, domain.RotateKey{IfVersion: second.Key.Version, By: domain.SystemPrincipal(system.ID, system.Name)})
	if err != nil {
		t.Fatalf("If-Match on the current version with a stale cache: %v", err)
	}
	evs, _ = env.Store.Load(ctx, "acme", created.Key.ID)
	if len(evs) != 4 || evs[3].Seq != third.Key.Version || first.Key.Version >= second.Key.Version {
		t.Fatalf("stream holds %d events, want the creation and three rotations", len(evs))
	}
	for i := 1; i < len(evs); i++ {
		if evs[i].PrevHash != evs[i-1].Hash {
			t.Errorf("event %d is not chained to the one before", i)
		}
	}
	if _, err := keys.Revoke(ctx, "acme", created.Key.ID, domain.RevokeKey{IfVersion: 1, By: domain.SystemPrincipal(system.ID, system.Name)}); domain.ErrorCode(err) != domain.EPRECONDITION {
		t.Errorf("a really stale If-Match: %v, want precondition_failed", err)
	}
}

func TestOnAppendedGivesEachEventAsTheStreamHoldsIt(t *testing.T) {
	env := natstest.Start(t)
	ctx := context.Background()
	var got []domain.Event
	env.Store.OnAppended(func(e domain.Event) { got = append(got, e) })
	keys := &domain.Keys{Store: env.Store}
	// No scopes: the stored body says [], and so must the offered event.
	created, err := keys.Create(ctx, domain.CreateKey{OrgID: "acme", Name: "k", By: domain.SystemPrincipal(system.ID, system.Name)})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := keys.Rotate(ctx, "acme", created.Key.ID, domain.RotateKey{GracePeriod: time.Hour, By: domain.SystemPrincipal(system.ID, system.Name)}); err != nil {
		t.Fatal(err)
	}
	if _, err := keys.Revoke(ctx, "acme", created.Key.ID, domain.RevokeKey{Reason: "done", By: domain.SystemPrincipal(system.ID, system.Name)}); err != nil {
		t.Fatal(err)
	}
	stored, err := env.Store.Load(ctx, "acme", created.Key.ID)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(stored) {
		t.Fatalf("offered %d events, the stream holds %d", len(got), len(stored))
	}
	for i := range stored {
		if !reflect.DeepEqual(got[i], stored[i]) {
			t.Errorf("event %d:\noffered %+v\n stored %+v", i, got[i], stored[i])
		}
	}
}
