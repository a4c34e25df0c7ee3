package projections_test

import (
	"context"
	"math/rand/v2"
	"reflect"
	"testing"
	"testing/quick"
	"time"

	"github.com/keyledger/keyledger/domain"
	"github.com/keyledger/keyledger/projections"
)

// sliceStore is an in-memory domain.Store: enough to run real commands.
type sliceStore struct{ evs []domain.Event }

func (s *sliceStore) Create(_ context.Context, e domain.Event) (domain.Event, error) {
	e.Seq = uint64(len(s.evs) + 1)
	s.evs = append(s.evs, e)
	return e, nil
}

func (s *sliceStore) Update(_ context.Context, org, id string, fn func(*domain.Key) ([]domain.Event, error)) (*domain.Key, error) {
	var mine []domain.Event
	for _, e := range s.evs {
		if e.OrgID == org && e.KeyID == id {
			mine = append(mine, e)
		}
	}
	k, err := domain.Rebuild(mine)
	if err != nil {
		return nil, err
	}
	news, err := fn(k)
	if err != nil {
		return nil, err
	}
	for _, e := range news {
		e.Seq = uint64(len(s.evs) + 1)
		s.evs = append(s.evs, e)
		_ = k.Apply(e)
	}
	return k, nil
}

// TestAsOfEqualsReplayUpToTheInstant runs random command sequences on a
// moving clock, then checks AsOf at random instants against a brute-force
// rebuild of each key from the events that had occurred by then.
func TestAsOfEqualsReplayUpToTheInstant(t *testing.T) {
	property := func(seed uint64) bool {
		rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
		start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
		now := start
		store := &sliceStore{}
		keys := &domain.Keys{Store: store, Now: func() time.Time { return now }}
		actors := []domain.Actor{{Kind: "user", ID: "ada"}, {Kind: "key", ID: "key_x"}, {Kind: "system", ID: "bootstrap"}}
		var ids []string
		ctx := context.Background()
		for range 1 + rng.IntN(60) {
			now = now.Add(time.Duration(rng.IntN(3600)) * time.Second)
			actor := actors[rng.IntN(len(actors))]
			org := []string{"acme", "globex"}[rng.IntN(2)]
			switch op := rng.IntN(4); {
			case op == 0 || len(ids) == 0:
				var exp time.Time
				if rng.IntN(3) == 0 {
					exp = now.Add(time.Duration(1+rng.IntN(10)) * time.Hour)
				}
				k, err := keys.Create(ctx, domain.CreateKey{OrgID: org, Name: "k", ExpiresAt: exp, By: by(actor, org)})
				if err == nil {
					ids = append(ids, k.Key.OrgID+"/"+k.Key.ID)
				}
			case op == 1 || op == 2:
				o, id := split(ids[rng.IntN(len(ids))])
				_, _ = keys.Rotate(ctx, o, id, domain.RotateKey{GracePeriod: time.Duration(rng.IntN(2)) * time.Hour, By: by(actor, o)})
			default:
				o, id := split(ids[rng.IntN(len(ids))])
				_, _ = keys.Revoke(ctx, o, id, domain.RevokeKey{By: by(actor, o)})
			}
		}
		for range 10 {
			// Any instant, or exactly an event's, or a nanosecond either side.
			at := start.Add(time.Duration(rng.Int64N(int64(now.Sub(start) + time.Hour + 1))))
			if len(store.evs) > 0 && rng.IntN(2) == 0 {
				at = store.evs[rng.IntN(len(store.evs))].OccurredAt.Add(time.Duration(rng.IntN(3)-1) * time.Nanosecond)
			}
			for _, org := range []string{"acme", "globex"} {
				fold := projections.NewAsOf(org, at)
				for _, e := range store.evs {
					if err := fold.Apply(e); err != nil {
						t.Log(err)
						return false
					}
				}
				if got, want := fold.Keys(), bruteForce(store.evs, org, at); !reflect.DeepEqual(got, want) {
					t.Logf("seed %d org %s at %s:\n got  %+v\n want %+v", seed, org, at, got, want)
					return false
				}
			}
		}
		return true
	}
	if err := quick.Check(property, &quick.Config{MaxCount: 200}); err != nil {
		t.Error(err)
	}
}

func split(ref string) (string, string) {
	for i := range ref {
		if ref[i] == '/' {
			return ref[:i], ref[i+1:]
		}
	}
	return ref, ""
}

// bruteForce rebuilds each key of org from scratch with only the events
// that had occurred by at.
func bruteForce(evs []domain.Event, org string, at time.Time) []projections.KeyAt {
	byKey := map[string][]domain.Event{}
	var order []string
	for _, e := range evs {
		if e.OrgID != org || e.OccurredAt.After(at) {
			continue
		}
		if _, seen := byKey[e.KeyID]; !seen {
			order = append(order, e.KeyID)
		}
		byKey[e.KeyID] = append(byKey[e.KeyID], e)
	}
	out := []projections.KeyAt{}
	for _, id := range order {
		mine := byKey[id]
		k, err := domain.Rebuild(mine)
		if err != nil {
			continue
		}
		last := mine[len(mine)-1]
		out = append(out, projections.KeyAt{Key: *k, Status: k.Status(at), LastChangedBy: last.Actor, LastChangedAt: last.OccurredAt})
	}
	sortByID(out)
	return out
}

func sortByID(ks []projections.KeyAt) {
	for i := 1; i < len(ks); i++ {
		for j := i; j > 0 && ks[j].Key.ID < ks[j-1].Key.ID; j-- {
			ks[j], ks[j-1] = ks[j-1], ks[j]
		}
	}
}

// by is actor as a principal allowed to manage the keys of org.
func by(actor domain.Actor, org string) domain.Principal {
	switch actor.Kind {
	case domain.ActorKey:
		return domain.KeyPrincipal(domain.Key{ID: actor.ID, OrgID: org, Name: actor.Name, Scopes: []string{domain.ScopeManage}})
	case domain.ActorSystem:
		return domain.SystemPrincipal(actor.ID, actor.Name)
	}
	return domain.PersonPrincipal(actor.ID, actor.Name, map[string]string{org: domain.RoleManager})
}
