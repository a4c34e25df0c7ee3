package events_test

import (
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/keyledger/keyledger/domain"
	"github.com/keyledger/keyledger/events"
	"github.com/keyledger/keyledger/internal/natstest"
)

func eventSeqs(evs []domain.Event) []uint64 {
	out := []uint64{}
	for _, e := range evs {
		out = append(out, e.Seq)
	}
	return out
}

// publishUnknown appends an event of a type this code does not know (as a
// newer version would write it) after the key's last event, and returns
// its sequence.
func publishUnknown(t *testing.T, env *natstest.Env, org, key string) uint64 {
	t.Helper()
	prev := ""
	if evs, err := env.Store.Load(testCtx(t), org, key); err == nil && len(evs) > 0 {
		prev = evs[len(evs)-1].Hash // chained, as a newer release appends it
	}
	body := `{"event_id":"` + domain.NewEventID() + `","type":"KeyRenamed","schema_version":2,"org_id":"` + org +
		`","key_id":"` + key + `","occurred_at":"2026-11-26T10:05:00.000000Z","actor":{"kind":"user","id":"u_7","name":"x"},"data":{"name":"new"},"prev_hash":"` + prev + `"}`
	msg := &nats.Msg{Subject: "keyledger.events." + org + "." + key + ".renamed", Data: []byte(body)}
	env.Signer.SignEvent(msg)
	ack, err := env.JS.PublishMsg(testCtx(t), msg)
	if err != nil {
		t.Fatal(err)
	}
	return ack.Sequence
}

// TestStoreHistory reads each key's and each org's history back from the
// stream, as the events endpoints do.
func TestStoreHistory(t *testing.T) {
	env := natstest.Start(t)
	ctx := testCtx(t)
	update := func(key string, fn func(*domain.Key) ([]domain.Event, error)) {
		t.Helper()
		if _, err := env.Store.Update(ctx, "acme", key, fn); err != nil {
			t.Fatal(err)
		}
	}
	a := mustCreate(t, env.Store, "acme") // 1
	mustCreate(t, env.Store, "globex")    // 2
	b := mustCreate(t, env.Store, "acme") // 3
	update(a.KeyID, rotateNow)            // 4
	mustCreate(t, env.Store, "acme-co")   // 5: shares a prefix, not a token, with acme
	unknown := publishUnknown(t, env, "acme", a.KeyID)
	update(b.KeyID, revokeNow)            // 7
	update(a.KeyID, rotateNow)            // 8
	update(a.KeyID, revokeNow)            // 9
	c := mustCreate(t, env.Store, "acme") // 10
	if unknown != 6 || c.Seq != 10 {
		t.Fatalf("setup: unknown at %d, last at %d; want 6, 10", unknown, c.Seq)
	}

	t.Run("KeyIsOldestFirstWithUnknownTypesAsNilData", func(t *testing.T) {
		evs := mustLoad(t, env.Store, "acme", a.KeyID)
		if got, want := eventSeqs(evs), []uint64{1, 4, 6, 8, 9}; !slices.Equal(got, want) {
			t.Fatalf("seqs = %v, want %v", got, want)
		}
		if evs[2].Data != nil || evs[2].Type != "KeyRenamed" {
			t.Errorf("unknown event = %+v, want type KeyRenamed with nil Data", evs[2])
		}
		// The aggregate counts it: its version is the key's last subject seq.
		k, err := domain.Rebuild(evs)
		if err != nil {
			t.Fatal(err)
		}
		if !k.Revoked || k.Version != 9 {
			t.Errorf("rebuilt key: Revoked %v, Version %d; want true, 9", k.Revoked, k.Version)
		}
	})

	t.Run("UpdateAfterAnUnknownTypeAppends", func(t *testing.T) {
		k := mustCreate(t, env.Store, "initech")
		seq := publishUnknown(t, env, "initech", k.KeyID)
		got, err := env.Store.Update(ctx, "initech", k.KeyID, rotateNow)
		if err != nil {
			t.Fatalf("Update after an unknown type: %v", err)
		}
		if got.Version <= seq {
			t.Errorf("Version = %d, want after %d", got.Version, seq)
		}
	})

	all := []uint64{1, 3, 4, 7, 8, 9, 10} // acme's known events
	for _, tt := range []struct {
		name   string
		org    string
		after  uint64
		limit  int
		filter domain.EventFilter
		want   []uint64
		next   uint64
		more   bool
		budget int
	}{
		{"FirstPage", "acme", 0, 3, domain.EventFilter{}, []uint64{1, 3, 4}, 4, true, 0},
		{"LastPage", "acme", 8, 3, domain.EventFilter{}, []uint64{9, 10}, 10, false, 0},
		{"AfterTheEndIsEmpty", "acme", 10, 3, domain.EventFilter{}, []uint64{}, 10, false, 0},
		{"AfterASeqOfAnotherOrg", "acme", 2, 2, domain.EventFilter{}, []uint64{3, 4}, 4, true, 0},
		{"OtherOrg", "globex", 0, 100, domain.EventFilter{}, []uint64{2}, 2, false, 0},
		{"OrgIsAWholeToken", "acme-co", 0, 100, domain.EventFilter{}, []uint64{5}, 5, false, 0},
		{"UnknownOrgIsEmpty", "umbrella", 0, 100, domain.EventFilter{}, []uint64{}, 0, false, 0},
		{"TypeFilter", "acme", 0, 100, domain.EventFilter{Types: []domain.EventType{domain.TypeKeyRevoked}}, []uint64{7, 9}, 10, false, 0},
		// One key's subjects only: the scan ends at its last event.
		{"KeyFilter", "acme", 0, 100, domain.EventFilter{KeyID: b.KeyID}, []uint64{3, 7}, 7, false, 0},
		// Consumers ignore types they do not know (PRODUCT.md); the
		// history the events endpoints show cannot encode them.
		{"UnknownTypeIsSkipped", "acme", 0, 100, domain.EventFilter{}, all, 10, false, 0},
		{"PageAcrossAnUnknownType", "acme", 4, 3, domain.EventFilter{}, []uint64{7, 8, 9}, 9, true, 0},
		// The budget bounds the events examined, matching or not; unknown
		// types count.
		{"BudgetEndsThePage", "acme", 0, 100, domain.EventFilter{}, []uint64{1, 3, 4}, 4, true, 3},
		{"BudgetWithAFilterThatMatchesNothing", "acme", 0, 100, domain.EventFilter{ActorID: "nobody"}, []uint64{}, 4, true, 3},
		{"BudgetGoesOnFromNext", "acme", 4, 100, domain.EventFilter{ActorID: "nobody"}, []uint64{}, 8, true, 3},
		{"BudgetLargerThanWhatIsLeft", "acme", 8, 100, domain.EventFilter{}, []uint64{9, 10}, 10, false, 3},
		{"BudgetExactlyWhatIsLeft", "acme", 8, 100, domain.EventFilter{}, []uint64{9, 10}, 10, false, 2},
		{"LimitBeforeBudget", "acme", 0, 2, domain.EventFilter{}, []uint64{1, 3}, 3, true, 3},
	} {
		t.Run("Org"+tt.name, func(t *testing.T) {
			page, next, more, err := env.Store.OrgEvents(ctx, tt.org, domain.EventQuery{After: tt.after, Limit: tt.limit, Budget: tt.budget, Filter: tt.filter})
			if err != nil {
				t.Fatal(err)
			}
			if got := eventSeqs(page); !slices.Equal(got, tt.want) {
				t.Errorf("seqs = %v, want %v", got, tt.want)
			}
			if got, want := next, tt.next; got != want {
				t.Errorf("next = %d, want %d", got, want)
			}
			if got, want := more, tt.more; got != want {
				t.Errorf("more = %v, want %v", got, want)
			}
			for _, e := range page {
				if e.Data == nil {
					t.Errorf("seq %d of type %q has no data: the events endpoints cannot show it", e.Seq, e.Type)
				}
			}
		})
	}

	t.Run("OrgPagesMatchLoad", func(t *testing.T) {
		page, _, _, err := env.Store.OrgEvents(ctx, "acme", domain.EventQuery{Limit: 100, Filter: domain.EventFilter{KeyID: c.KeyID}})
		if err != nil {
			t.Fatal(err)
		}
		if got, want := page, mustLoad(t, env.Store, "acme", c.KeyID); !reflect.DeepEqual(got, want) {
			t.Errorf("OrgEvents:\n got %+v\nwant %+v (Load)", got, want)
		}
	})

	t.Run("InvalidOrgIsInvalid", func(t *testing.T) {
		for _, org := range []string{"ac.me", "*", ">", "", "ACME"} {
			_, _, _, err := env.Store.OrgEvents(ctx, org, domain.EventQuery{Limit: 10})
			if got, want := domain.ErrorCode(err), domain.EINVALID; got != want {
				t.Errorf("OrgEvents(%q) code = %q (%v), want %q", org, got, err, want)
			}
		}
	})

	t.Run("EachKeyEventReadsOnlyThoseKeys", func(t *testing.T) {
		for _, tt := range []struct {
			name  string
			ids   []string
			most  uint64
			seqs  []uint64
			total uint64
			ok    bool
		}{
			{"TwoKeysInStreamOrder", []string{b.KeyID, a.KeyID}, 0, []uint64{1, 3, 4, 6, 7, 8, 9}, 7, true},
			{"WithinTheBound", []string{b.KeyID, c.KeyID}, 3, []uint64{3, 7, 10}, 3, true},
			{"OverTheBoundReadsNothing", []string{a.KeyID, c.KeyID}, 5, nil, 6, false},
			{"NoKeys", nil, 1, nil, 0, true},
			{"AKeyOfAnotherOrgIsNone", []string{domain.NewKeyID()}, 0, nil, 0, true},
		} {
			t.Run(tt.name, func(t *testing.T) {
				var seqs []uint64
				total, ok, err := env.Store.EachKeyEvent(ctx, "acme", tt.ids, tt.most, func(e domain.Event) error {
					seqs = append(seqs, e.Seq)
					return nil
				})
				if err != nil || total != tt.total || ok != tt.ok || !slices.Equal(seqs, tt.seqs) {
					t.Errorf("EachKeyEvent = %v, %d, %v, %v; want %v, %d, %v", seqs, total, ok, err, tt.seqs, tt.total, tt.ok)
				}
			})
		}
		for _, ids := range [][]string{{"key_*"}, {a.KeyID, "key_>"}} {
			if _, _, err := env.Store.EachKeyEvent(ctx, "acme", ids, 0, nil); domain.ErrorCode(err) != domain.EINVALID {
				t.Errorf("EachKeyEvent(%q): %v, want invalid", ids, err)
			}
		}
		if _, _, err := env.Store.EachKeyEvent(ctx, "ac.me", []string{a.KeyID}, 0, nil); domain.ErrorCode(err) != domain.EINVALID {
			t.Errorf("EachKeyEvent of org ac.me: %v, want invalid", err)
		}
	})

	t.Run("InvalidKeyFilterIsInvalid", func(t *testing.T) {
		for _, id := range []string{"key_*", "key_>", "key_01M8DA3RKDN86A1MPSZQH5GBYS.x"} {
			_, _, _, err := env.Store.OrgEvents(ctx, "acme", domain.EventQuery{Limit: 10, Filter: domain.EventFilter{KeyID: id}})
			if got, want := domain.ErrorCode(err), domain.EINVALID; got != want {
				t.Errorf("OrgEvents(key %q) code = %q (%v), want %q", id, got, err, want)
			}
		}
	})

	t.Run("SinceAndUntilFilterByOccurredAt", func(t *testing.T) {
		// Creations occur at codecAt, rotations a minute later, revocations two.
		f := domain.EventFilter{Since: codecAt.Add(time.Minute), Until: codecAt.Add(2 * time.Minute)}
		page, _, _, err := env.Store.OrgEvents(ctx, "acme", domain.EventQuery{Limit: 100, Filter: f})
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range page {
			if e.Type != domain.TypeKeyRotated {
				t.Errorf("seq %d is %s, want only rotations", e.Seq, e.Type)
			}
		}
		if got, want := len(page), 2; got != want {
			t.Errorf("%d events, want %d", got, want)
		}
	})

	t.Run("EncodableForTheAPI", func(t *testing.T) {
		page, _, _, err := env.Store.OrgEvents(ctx, "acme", domain.EventQuery{Limit: 100})
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range page {
			if _, err := events.ToEnvelope(e); err != nil {
				t.Errorf("ToEnvelope(seq %d): %v", e.Seq, err)
			}
		}
	})
}
