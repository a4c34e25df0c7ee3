package events_test

import (
	"bytes"
	"testing"

	"github.com/keyledger/keyledger/events"
	"github.com/keyledger/keyledger/internal/natstest"
)

// A scan of every event asks the stream by sequence alone and drops the
// checkpoint subject's messages itself (direct.go, cursor.keep): the
// server no longer filters them out, so whatever is on the checkpoint
// subject crosses the wire to the scan.

// TestAttackCheckpointJunkIsNotReadAgainByEachCheckpoint: junk on the
// checkpoint subject, which the service credential may publish, after
// the chain's last link and with no event since. Each Once scans the
// events from that link on, and finds none: it wrote nothing, so the
// next one scanned from the same place, downloading all the junk again,
// every interval, for as long as no event came (a megabyte a message,
// as much as the stream holds).
func TestAttackCheckpointJunkIsNotReadAgainByEachCheckpoint(t *testing.T) {
	env := natstest.Start(t)
	ctx := testCtx(t)
	cp := &events.Checkpointer{Store: env.Store}
	mustCreate(t, env.Store, "acme")
	if wrote, _, err := cp.Once(ctx); err != nil || !wrote {
		t.Fatalf("first checkpoint: wrote %v, %v", wrote, err)
	}
	junk := bytes.Repeat([]byte("j"), 256<<10)
	for range 16 { // 4 MiB
		publishHeaders(t, env, events.CheckpointSubject, nil, junk)
	}
	if wrote, _, err := cp.Once(ctx); err != nil || wrote {
		t.Fatalf("checkpoint over junk only: wrote %v, %v", wrote, err)
	}
	nc := env.JS.Conn()
	before := nc.Stats().InBytes
	for range 3 {
		if wrote, _, err := cp.Once(ctx); err != nil || wrote {
			t.Fatalf("checkpoint over junk only: wrote %v, %v", wrote, err)
		}
	}
	if got := nc.Stats().InBytes - before; got > 1<<20 {
		t.Errorf("three checkpoints with no event to list read %d bytes: the junk again each time", got)
	}
	// An event after the junk is still listed.
	k := mustCreate(t, env.Store, "acme")
	if wrote, _, err := cp.Once(ctx); err != nil || !wrote {
		t.Fatalf("checkpoint after the junk: wrote %v, %v", wrote, err)
	}
	head, ok, err := cp.Head(ctx)
	if err != nil || !ok {
		t.Fatalf("Head: %v, %v", ok, err)
	}
	evs := mustLoad(t, env.Store, "acme", k.KeyID)
	if got, want := head.ToSeq, evs[len(evs)-1].Seq; got != want {
		t.Errorf("the head lists up to %d, want the new event %d", got, want)
	}
}
