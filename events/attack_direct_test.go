package events_test

import (
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/keyledger/keyledger/domain"
	"github.com/keyledger/keyledger/events"
	"github.com/keyledger/keyledger/internal/natstest"
)

// A batch direct get answers with each stored message's own headers
// first, then the server's (Nats-Stream, Nats-Subject, Nats-Sequence,
// Nats-Time-Stamp, Nats-Num-Pending, Nats-Last-Sequence), and ends with
// a status message (NATS/1.0 204 EOB). Whoever holds the service
// credential writes a message's own headers. These tests publish, with
// it, messages whose headers are the server's words.

// publishHeaders publishes body on subject with the headers h, as the
// service credential may, and returns its sequence.
func publishHeaders(t *testing.T, env *natstest.Env, subject string, h nats.Header, body []byte) uint64 {
	t.Helper()
	ack, err := env.JS.PublishMsg(testCtx(t), &nats.Msg{Subject: subject, Header: h, Data: body})
	if err != nil {
		t.Fatal(err)
	}
	return ack.Sequence
}

// TestAttackStoredStatusHeaderEndsTheRead: an empty message carrying a
// header "Status: 404" (or 204) under a key's subjects was read as the
// server's end of the batch: the key's Load came back empty (404 on
// every command, the revocation included) or unavailable for good.
func TestAttackStoredStatusHeaderEndsTheRead(t *testing.T) {
	for _, status := range []string{"404", "204", "408"} {
		t.Run(status, func(t *testing.T) {
			env := natstest.Start(t)
			ctx := testCtx(t)
			k := mustCreate(t, env.Store, "acme")
			publishHeaders(t, env, "keyledger.events.acme."+k.KeyID+".x", nats.Header{"Status": {status}, "Description": {"EOB"}}, nil)
			if _, err := env.Store.UpdateFromHistory(ctx, "acme", k.KeyID, revokeNow); err != nil {
				t.Fatalf("revoke after a forged status header: %v", err)
			}
			evs := mustLoad(t, env.Store, "acme", k.KeyID)
			if got := len(evs); got != 2 || evs[1].Type != domain.TypeKeyRevoked {
				t.Fatalf("Load after the revocation: %d events, want created and revoked", got)
			}
		})
	}
}

// TestAttackStoredSequenceHeaderPassesAsJudged: a forged, unsigned
// KeyCreated whose own headers said "Nats-Sequence: 1" was read as the
// message at sequence 1. Beside projections, a read takes their verdict
// by sequence: the forgery passed as the genuine event judged there, and
// showed in the org's history, in a key's Load and in an as_of fold.
func TestAttackStoredSequenceHeaderPassesAsJudged(t *testing.T) {
	env := natstest.Start(t)
	ctx := testCtx(t)
	genuine := mustCreate(t, env.Store, "acme")
	table, _ := follow(t, env.Store)
	env.Store.UseVerdicts(table)

	minted := mintCreated(t, "acme")
	body, err := events.Encode(minted)
	if err != nil {
		t.Fatal(err)
	}
	forged := publishHeaders(t, env, events.Subject("acme", minted.KeyID, minted.Type),
		nats.Header{"Nats-Sequence": {strconv.FormatUint(genuine.Seq, 10)}, "Nats-Subject": {events.Subject("acme", genuine.KeyID, genuine.Type)}}, body)
	waitJudged(t, table, forged)

	page, _, _, err := env.Store.OrgEvents(ctx, "acme", domain.EventQuery{Limit: 50})
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range page {
		if e.KeyID == minted.KeyID {
			t.Errorf("the org's history shows the forged creation as seq %d", e.Seq)
		}
	}
	if evs := mustLoad(t, env.Store, "acme", minted.KeyID); len(evs) != 0 {
		t.Errorf("Load of the forged key: %d events, want none", len(evs))
	}
	var folded []string
	if _, _, err := env.Store.EachKeyEvent(ctx, "acme", []string{minted.KeyID}, 0, func(e domain.Event) error {
		folded = append(folded, e.KeyID)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if len(folded) != 0 {
		t.Errorf("an as_of fold of the forged key applied %d events, want none", len(folded))
	}
}

// TestAttackStoredSequenceHeaderRepeatsAndSkips: a message at the end of
// a batch of a key's long history (the 256th) whose own headers said
// "Nats-Sequence: 2" sent the next batch back to sequence 3: the read repeated events it had
// already given, and ran out of its count before the key's last ones.
// The pages of the history repeated events and never reached the end.
func TestAttackStoredSequenceHeaderRepeatsAndSkips(t *testing.T) {
	env := natstest.Start(t)
	ctx := testCtx(t)
	k := mustCreate(t, env.Store, "acme")
	for range 254 {
		if _, err := env.Store.UpdateFromHistory(ctx, "acme", k.KeyID, rotateNow); err != nil {
			t.Fatal(err)
		}
	}
	publishHeaders(t, env, "keyledger.events.acme."+k.KeyID+".x", nats.Header{"Nats-Sequence": {"2"}, "Nats-Num-Pending": {"0"}}, []byte("junk"))
	for range 60 {
		if _, err := env.Store.UpdateFromHistory(ctx, "acme", k.KeyID, rotateNow); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := env.Store.UpdateFromHistory(ctx, "acme", k.KeyID, revokeNow); err != nil {
		t.Fatal(err)
	}
	want := mustLoad(t, env.Store, "acme", k.KeyID)
	if got := len(want); got != 316 || want[len(want)-1].Type != domain.TypeKeyRevoked {
		t.Fatalf("Load: %d events, the last %s; want 316, the last revoked", got, want[len(want)-1].Type)
	}
	var all []uint64
	after := uint64(0)
	for more, pages := true, 0; more; pages++ {
		if pages > 100 {
			t.Fatalf("the history's pages never end: %d read, at %d", pages, after)
		}
		var page []domain.Event
		var err error
		page, after, more, err = env.Store.OrgEvents(ctx, "acme", domain.EventQuery{After: after, Limit: 40})
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, eventSeqs(page)...)
	}
	if !slices.Equal(all, eventSeqs(want)) {
		t.Errorf("pages of the history: %d events, want the key's %d in order", len(all), len(want))
	}
}

// waitJudged waits for the projections to have judged seq.
func waitJudged(t *testing.T, table interface {
	Judged(uint64) (bool, bool)
}, seq uint64) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		if _, known := table.Judged(seq); known {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the projections never judged seq %d", seq)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestAttackStoredHeadersOnTheCheckpointSubject: the checkpointer reads
// the checkpoint subject's last message by direct get, through nats.go,
// which takes the first value of each header. Junk published there whose
// own headers said "Nats-Sequence: 1", or "Status: 404", made every
// checkpoint expect the wrong last message, for good.
func TestAttackStoredHeadersOnTheCheckpointSubject(t *testing.T) {
	for name, h := range map[string]nats.Header{
		"Sequence": {"Nats-Sequence": {"1"}, "Nats-Stream": {events.StreamName}, "Nats-Subject": {events.CheckpointSubject}},
		"Status":   {"Status": {"404"}},
	} {
		t.Run(name, func(t *testing.T) {
			env := natstest.Start(t)
			ctx := testCtx(t)
			cp := &events.Checkpointer{Store: env.Store}
			mustCreate(t, env.Store, "acme")
			if wrote, _, err := cp.Once(ctx); err != nil || !wrote {
				t.Fatalf("first checkpoint: wrote %v, %v", wrote, err)
			}
			var body []byte
			if name == "Sequence" {
				body = []byte("junk")
			}
			publishHeaders(t, env, events.CheckpointSubject, h, body)
			mustCreate(t, env.Store, "acme")
			if wrote, _, err := cp.Once(ctx); err != nil || !wrote {
				t.Fatalf("checkpoint after junk with the server's headers: wrote %v, %v", wrote, err)
			}
			head, ok, err := cp.Head(ctx)
			if err != nil || !ok {
				t.Fatalf("Head: %v, %v", ok, err)
			}
			if got, want := head.Seq, env.LastSeq(t); got != want {
				t.Errorf("head at %d, want the last message %d", got, want)
			}
		})
	}
}

// TestStoreMsgTakesTheServersSequenceAndSubject: Store.Msg, which a
// webhook redelivery reads its event with, names a message by the
// server's sequence and subject, whatever the message's own headers say
// (nats.go's GetMsg took them from those headers on this stream).
func TestStoreMsgTakesTheServersSequenceAndSubject(t *testing.T) {
	env := natstest.Start(t)
	genuine := mustCreate(t, env.Store, "acme")
	seq := publishHeaders(t, env, "keyledger.events.acme.key_x.created",
		nats.Header{"Nats-Sequence": {strconv.FormatUint(genuine.Seq, 10)}, "Nats-Subject": {"keyledger.events.acme.other.created"}}, []byte("junk"))
	m, ok, err := env.Store.Msg(testCtx(t), seq)
	if err != nil || !ok {
		t.Fatalf("Msg(%d): %v, %v", seq, ok, err)
	}
	if m.Seq != seq || m.Subject != "keyledger.events.acme.key_x.created" {
		t.Errorf("Msg(%d) = seq %d on %s, want the stored message's", seq, m.Seq, m.Subject)
	}
}
