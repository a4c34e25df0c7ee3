package projections_test

import (
	"context"
	"reflect"
	"testing"
	"time"

	"github.com/keyledger/keyledger/domain"
	"github.com/keyledger/keyledger/internal/natstest"
	"github.com/keyledger/keyledger/projections"
)

var system = domain.Actor{Kind: domain.ActorSystem, ID: "test"}

// fold feeds events straight into fresh projections, numbering them.
func fold(t *testing.T, evs []domain.Event) (*projections.Listing, *projections.VerifyIndex) {
	t.Helper()
	l, v := projections.NewListing(), projections.NewVerifyIndex()
	for i, e := range evs {
		e.Seq = uint64(i + 1)
		for _, p := range []projections.Projection{l, v} {
			if err := p.Apply(e); err != nil {
				t.Fatal(err)
			}
		}
	}
	return l, v
}

// script is a small history: three keys of acme, one rotated, one revoked,
// one of globex, and an event of a type this code does not know.
type script struct {
	evs                    []domain.Event
	a, b, c, g             string // key ids
	aOld, aNew, bSec, gSec string // secrets
}

func newScript(t *testing.T, now time.Time) script {
	t.Helper()
	var s script
	mint := func(org string) (domain.Event, string) {
		secret, _ := domain.GenerateSecret(domain.DefaultPrefix, nil)
		e, err := domain.DecideCreate(domain.CreateKey{OrgID: org, Name: org + " key", Actor: system}, now, 0, secret)
		if err != nil {
			t.Fatal(err)
		}
		return e, secret
	}
	ea, aOld := mint("acme")
	eb, bSec := mint("acme")
	ec, _ := mint("acme")
	eg, gSec := mint("globex")
	ka, _ := domain.Rebuild([]domain.Event{ea})
	aNew, _ := domain.GenerateSecret(domain.DefaultPrefix, nil)
	rot, _ := ka.DecideRotate(domain.RotateKey{Actor: system}, now, aNew)
	kb, _ := domain.Rebuild([]domain.Event{eb})
	rev, _ := kb.DecideRevoke(domain.RevokeKey{Actor: system}, now)
	unknown := domain.Event{ID: domain.NewEventID(), Type: "KeyRenamed", OrgID: "acme", KeyID: ea.KeyID}
	s.evs = []domain.Event{ea, eb, ec, eg, rot, rev, unknown}
	s.a, s.b, s.c, s.g = ea.KeyID, eb.KeyID, ec.KeyID, eg.KeyID
	s.aOld, s.aNew, s.bSec, s.gSec = aOld, aNew, bSec, gSec
	return s
}

func TestProjections(t *testing.T) {
	now := time.Date(2026, 11, 27, 9, 0, 0, 0, time.UTC)
	s := newScript(t, now)
	l, v := fold(t, s.evs)

	t.Run("EachKnowsItsLastSequenceIncludingUnknownTypes", func(t *testing.T) {
		for _, p := range []projections.Projection{l, v} {
			if got := p.LastSeq(); got != uint64(len(s.evs)) {
				t.Errorf("%T.LastSeq() = %d, want %d", p, got, len(s.evs))
			}
		}
	})

	t.Run("ListingIsNewestFirstAndHidesRevoked", func(t *testing.T) {
		for _, tc := range []struct {
			status string
			want   []string
		}{
			{"", []string{s.c, s.a}},
			{"all", []string{s.c, s.b, s.a}},
			{"revoked", []string{s.b}},
		} {
			page, next := l.List("acme", projections.ListQuery{Status: tc.status, Limit: 10, Now: now})
			if got := keyIDs(page); !reflect.DeepEqual(got, tc.want) || next != "" {
				t.Errorf("status %q: %v next %q, want %v", tc.status, got, next, tc.want)
			}
		}
		first, next := l.List("acme", projections.ListQuery{Status: "all", Limit: 2, Now: now})
		rest, last := l.List("acme", projections.ListQuery{Status: "all", Limit: 2, Cursor: next, Now: now})
		if got := append(keyIDs(first), keyIDs(rest)...); !reflect.DeepEqual(got, []string{s.c, s.b, s.a}) || last != "" {
			t.Errorf("pages = %v, next %q", got, last)
		}
		if k, ok := l.Get("acme", s.a); !ok || k.RotatedAt.IsZero() || k.Version != 5 {
			t.Errorf("Get = %+v %v", k, ok)
		}
		if _, ok := l.Get("globex", s.a); ok {
			t.Error("a key is visible under another org")
		}
	})

	t.Run("VerifyIndexAnswersEveryCode", func(t *testing.T) {
		unknown, _ := domain.GenerateSecret(domain.DefaultPrefix, nil)
		for _, tc := range []struct{ name, secret, code string }{
			{"Current", s.aNew, domain.VerifyValid},
			{"RotatedAway", s.aOld, domain.VerifyExpired},
			{"Revoked", s.bSec, domain.VerifyRevoked},
			{"OtherOrg", s.gSec, domain.VerifyValid},
			{"Unknown", unknown, domain.VerifyNotFound},
			{"BadChecksum", s.aNew[:len(s.aNew)-1] + "x", domain.VerifyMalformed},
		} {
			if got := v.Verify(tc.secret, now).Code; got != tc.code {
				t.Errorf("%s: %s, want %s", tc.name, got, tc.code)
			}
		}
	})
}

func keyIDs(ks []domain.Key) []string {
	out := []string{}
	for _, k := range ks {
		out = append(out, k.ID)
	}
	return out
}

// TestRunnerOnARealStream catches up, serves read-your-writes, and
// rebuilds identical projections after a restart of the server.
func TestRunnerOnARealStream(t *testing.T) {
	dir := t.TempDir()
	env := natstest.StartIn(t, dir)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	keys := &domain.Keys{Store: env.Store}
	for range 3 {
		if _, err := keys.Create(ctx, domain.CreateKey{OrgID: "acme", Name: "before", Actor: system}); err != nil {
			t.Fatal(err)
		}
	}
	run := func(env *natstest.Env) (*projections.Runner, *projections.Listing, context.CancelFunc) {
		l := projections.NewListing()
		r := projections.NewRunner(env.Store, natstest.Quiet(), l)
		rctx, stop := context.WithCancel(ctx)
		go func() { _ = r.Run(rctx) }()
		return r, l, stop
	}
	r, l, stop := run(env)
	if err := r.WaitFor(ctx, 3); err != nil || !r.Ready() {
		t.Fatalf("caught up: %v, ready %v", err, r.Ready())
	}
	k, err := keys.Create(ctx, domain.CreateKey{OrgID: "acme", Name: "after", Actor: system})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.WaitFor(ctx, k.Key.Version); err != nil {
		t.Fatal(err)
	}
	if _, ok := l.Get("acme", k.Key.ID); !ok {
		t.Error("WaitFor returned before the listing had the key")
	}
	cancelled, cancelNow := context.WithCancel(ctx)
	cancelNow()
	if err := r.WaitFor(cancelled, k.Key.Version+100); err == nil {
		t.Error("WaitFor on a cancelled context returned nil")
	}
	page, _ := l.List("acme", projections.ListQuery{Status: "all", Limit: 100})
	stop()
	env.Stop()

	env2 := natstest.StartIn(t, dir)
	r2, l2, stop2 := run(env2)
	defer stop2()
	if err := r2.WaitFor(ctx, k.Key.Version); err != nil {
		t.Fatal(err)
	}
	page2, _ := l2.List("acme", projections.ListQuery{Status: "all", Limit: 100})
	if !reflect.DeepEqual(page, page2) || len(page) != 4 {
		t.Error("projections rebuilt after a restart differ")
	}
}
