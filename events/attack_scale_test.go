package events_test

import (
	"bytes"
	"runtime"
	"strconv"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

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

// TestAttackBatchesOfOnlyCheckpointsNeitherStopNorLoopTheScan (held):
// whole batches of checkpoint-subject junk between two events, some of
// it with the server's headers written into it (a Nats-Subject of an
// event, a Nats-Num-Pending of zero). The scan of every event drops all
// of it, reads on to the event after it, stops at the stream's end as it
// stood when the scan began (a message published during the scan waits
// for the next), and never hands out the junk as an event.
func TestAttackBatchesOfOnlyCheckpointsNeitherStopNorLoopTheScan(t *testing.T) {
	env := natstest.Start(t)
	ctx := testCtx(t)
	first := mustCreate(t, env.Store, "acme")
	for i := range 700 { // more than two batches
		h := nats.Header{}
		if i%2 == 0 {
			h["Nats-Subject"] = []string{"keyledger.events.acme." + first.KeyID + ".created"}
			h["Nats-Num-Pending"] = []string{"0"}
			h["Nats-Sequence"] = []string{"1"}
		}
		publishHeaders(t, env, events.CheckpointSubject, h, []byte("junk"))
	}
	last := mustCreate(t, env.Store, "acme")
	end := env.LastSeq(t)
	var subjects []string
	err := env.Store.Scan(ctx, events.SubjectRoot+".>", 1, func(m events.Msg) error {
		if len(subjects) == 0 {
			publishHeaders(t, env, "keyledger.events.acme."+last.KeyID+".x", nil, []byte("during"))
		}
		if !m.IsEvent() || m.Seq > end {
			t.Errorf("the scan handed out %s at %d (the stream ended at %d)", m.Subject, m.Seq, end)
		}
		subjects = append(subjects, m.Subject)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if got := len(subjects); got != 2 {
		t.Fatalf("the scan read %d events, want the two around the junk: %v", got, subjects)
	}
}

// TestAttackJunkEventNamedACheckpointIsStillListed (held): junk on a
// key's subject whose own headers say it is on the checkpoint subject.
// The scan of every event drops what is on the checkpoint subject by the
// server's word (the last Nats-Subject), so the checkpoint still lists
// the junk (as not keyledger's) and the chain does not skip it.
func TestAttackJunkEventNamedACheckpointIsStillListed(t *testing.T) {
	env := natstest.Start(t)
	ctx := testCtx(t)
	cp := &events.Checkpointer{Store: env.Store}
	k := mustCreate(t, env.Store, "acme")
	junk := publishHeaders(t, env, "keyledger.events.acme."+k.KeyID+".x",
		nats.Header{"Nats-Subject": {events.CheckpointSubject}, "Nats-Stream": {events.StreamName}}, []byte("junk"))
	if wrote, _, err := cp.Once(ctx); err != nil || !wrote {
		t.Fatalf("checkpoint: wrote %v, %v", wrote, err)
	}
	head, ok, err := cp.Head(ctx)
	if err != nil || !ok {
		t.Fatalf("Head: %v, %v", ok, err)
	}
	if got := head.ToSeq; got != junk {
		t.Errorf("the checkpoint lists up to %d, want the junk at %d", got, junk)
	}
}

// TestAttackSnapshotChunksAddedAfterItAreRefused (held): the snapshot's
// chunks are read in batches by direct get. With the service credential,
// chunks published on the signed object's chunk subject after it: a copy
// of its first chunk, one whose own headers claim an earlier chunk's
// sequence, no pending and the end of the batch, and a pile of full-size
// chunks. Each makes the object more than its signed size, and Get
// refuses it without holding more than the signed size and a batch.
func TestAttackSnapshotChunksAddedAfterItAreRefused(t *testing.T) {
	signed := bytes.Repeat([]byte("the signed snapshot\n"), 20000) // 400 kB: four chunks
	for name, add := range map[string]func(t *testing.T, env *natstest.Env, subject string, first events.Msg){
		"copy of the first": func(t *testing.T, env *natstest.Env, subject string, first events.Msg) {
			publishHeaders(t, env, subject, nil, first.Data)
		},
		"server's headers": func(t *testing.T, env *natstest.Env, subject string, first events.Msg) {
			publishHeaders(t, env, subject, nats.Header{"Nats-Sequence": {strconv.FormatUint(first.Seq, 10)},
				"Nats-Num-Pending": {"0"}, "Status": {"204"}, "Nats-Subject": {subject}}, []byte("x"))
		},
		"a pile": func(t *testing.T, env *natstest.Env, subject string, first events.Msg) {
			for range 256 { // 32 MiB
				publishHeaders(t, env, subject, nil, first.Data)
			}
		},
	} {
		t.Run(name, func(t *testing.T) {
			env := natstest.Start(t)
			ctx := testCtx(t)
			snaps, err := events.OpenSnapshots(ctx, env.JS, env.Store, 1)
			if err != nil {
				t.Fatal(err)
			}
			if err := snaps.Put(ctx, bytes.NewReader(signed)); err != nil {
				t.Fatal(err)
			}
			obs, err := env.JS.ObjectStore(ctx, events.SnapshotBucket)
			if err != nil {
				t.Fatal(err)
			}
			info, err := obs.GetInfo(ctx, "projections")
			if err != nil {
				t.Fatal(err)
			}
			subject := "$O." + events.SnapshotBucket + ".C." + info.NUID
			raw, err := env.JS.Stream(ctx, events.SnapshotStream)
			if err != nil {
				t.Fatal(err)
			}
			m, err := raw.GetMsg(ctx, 1, jetstream.WithGetMsgSubject(subject))
			if err != nil {
				t.Fatal(err)
			}
			rc, err := snaps.Get(ctx)
			if err != nil {
				t.Fatalf("Get of the snapshot as signed: %v", err)
			}
			rc.Close()
			add(t, env, subject, events.Msg{Seq: m.Sequence, Data: m.Data})
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			rc, err = snaps.Get(ctx)
			runtime.ReadMemStats(&after)
			if err == nil {
				rc.Close()
				t.Fatal("Get handed out a snapshot with chunks added after it was signed")
			}
			// A batch is at most 4 MiB, whatever the pile's length; the
			// embedded server's allocations count here too.
			if got := after.TotalAlloc - before.TotalAlloc; got > 32<<20 {
				t.Errorf("Get allocated %d bytes to refuse a %d-byte snapshot", got, len(signed))
			}
		})
	}
}
