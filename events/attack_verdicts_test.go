package events_test

import (
	"context"
	"testing"
	"time"

	"github.com/keyledger/keyledger/domain"
	"github.com/keyledger/keyledger/events"
	"github.com/keyledger/keyledger/internal/natstest"
	"github.com/keyledger/keyledger/projections"
)

// The table marks an event judged as it applies it; the runner refuses
// an event the table found to be of no key it knows (ErrRefused) only
// after the table has returned. Judge asked the runner to wait only when
// the table had not reached the event, so a webhook delivery pulled in
// between took the table's word, "trusted", for an event the projections
// were refusing at that moment: here the rotation of a key whose creation
// this instance refused (signed by a key it does not trust), which it then
// sent to every endpoint. The verdict counts once the runner has done
// with the event.
func TestAttackJudgeWaitsForTheRunnerNotTheTableAlone(t *testing.T) {
	env := natstest.Start(t)
	ctx := context.Background()
	keys := &domain.Keys{Store: env.Store}
	k, err := keys.Create(ctx, domain.CreateKey{OrgID: "acme", Name: "k", By: asSystem})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := keys.Rotate(ctx, "acme", k.Key.ID, domain.RotateKey{By: asSystem}); err != nil {
		t.Fatal(err)
	}
	stream, err := env.JS.Stream(ctx, events.StreamName)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := stream.GetMsg(ctx, 2)
	if err != nil {
		t.Fatal(err)
	}
	rotated, err := events.Decode(raw.Data, 2)
	if err != nil {
		t.Fatal(err)
	}
	// Another instance, which trusts the signer of the rotation: its
	// runner refused the creation and is in the middle of seq 2.
	reader, err := events.Attach(ctx, env.JS, events.Config{Logger: natstest.Quiet(), Signers: env.Signers})
	if err != nil {
		t.Fatal(err)
	}
	table := projections.NewTable()
	table.Reject(1)
	_ = table.Apply(domain.Event{Seq: 1})
	rotated.Trusted = true
	if err := table.Apply(rotated); err == nil {
		t.Fatal("the table applied the rotation of a key it does not hold")
	}
	done := make(chan struct{}) // the runner has done with seq 2
	reader.UseVerdicts(table)
	reader.WaitVerdicts(func(ctx context.Context, seq uint64) error {
		if seq < 2 {
			return nil
		}
		select {
		case <-done:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	})

	type verdict struct {
		ok  bool
		err error
	}
	got := make(chan verdict, 1)
	go func() {
		jctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		_, ok, err := reader.Judge(jctx, events.Msg{Seq: raw.Sequence, Subject: raw.Subject, Header: raw.Header, Data: raw.Data})
		got <- verdict{ok, err}
	}()
	select {
	case v := <-got:
		t.Fatalf("Judge answered %+v before the runner had done with the event", v)
	case <-time.After(200 * time.Millisecond):
	}
	table.Reject(2) // what the runner does next
	close(done)
	if v := <-got; v.ok || v.err != nil {
		t.Errorf("Judge of an event the projections refused: ok %v, err %v; want refused", v.ok, v.err)
	}
}
