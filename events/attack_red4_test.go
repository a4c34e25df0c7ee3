package events_test

import (
	"context"
	"testing"
	"time"

	"github.com/keyledger/keyledger/domain"
	"github.com/keyledger/keyledger/internal/natstest"
)

// TestAttackForgedLeakReport: an insider with the NATS service credential
// publishes, unsigned, a KeyLeakReported chained onto a live key (with a
// javascript: URL), to mark it leaked on the page, or to make the real
// report of that secret and URL look like a repeat. A fresh instance does
// not apply it, the history does not hold it, and the real report still
// records and revokes.
func TestAttackForgedLeakReport(t *testing.T) {
	env := natstest.Start(t)
	ctx := context.Background()
	keys := &domain.Keys{Store: env.Store}
	k, err := keys.Create(ctx, domain.CreateKey{OrgID: "acme", Name: "target", By: asSystem})
	if err != nil {
		t.Fatal(err)
	}
	hash, url := domain.HashSecret(k.Secret), "javascript:alert(1)"
	forged := domain.Event{ID: domain.NewEventID(), Type: domain.TypeKeyLeakReported, SchemaVersion: 1, OrgID: "acme", KeyID: k.Key.ID,
		OccurredAt: time.Now(), Actor: system, PrevHash: k.Key.LastHash,
		Data: domain.KeyLeakReported{SecretHash: hash, Masked: domain.MaskSecret(k.Secret), URL: url, Reporter: "github"}}
	seq := forge(t, env, forged, nil)

	table, runner := follow(t, env.Store)
	if got, _ := table.Listing().Get("acme", k.Key.ID); got.LastLeak != nil {
		t.Errorf("a forged leak report was applied: %+v", got.LastLeak)
	}
	if trusted, known := table.Judged(seq); trusted || !known || runner.Rejected() != 1 {
		t.Errorf("Judged(%d) = %v, %v; refused %d", seq, trusted, known, runner.Rejected())
	}
	env.Store.UseVerdicts(table)
	if evs, err := env.Store.Load(ctx, "acme", k.Key.ID); err != nil || len(evs) != 1 {
		t.Errorf("the history holds %d events (%v), want its creation only", len(evs), err)
	}
	out, err := keys.ReportLeak(ctx, "acme", k.Key.ID, domain.ReportLeak{SecretHash: hash, Masked: domain.MaskSecret(k.Secret), URL: url, Reporter: "github", Revoke: true, By: asSystem})
	if err != nil || !out.Recorded || !out.Revoked {
		t.Errorf("the real report after a forged one: %+v, %v; want recorded and revoked", out, err)
	}
}
