package natsembed_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"io"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/keyledger/keyledger/domain"
	"github.com/keyledger/keyledger/events"
	"github.com/keyledger/keyledger/events/natsembed"
	"github.com/keyledger/keyledger/internal/natstest"
)

// TestAttackSubscriberSnapshotConsumerCannotDeliverIntoTheStream: the
// subscriber may create consumers on the snapshot bucket's stream, so that
// nats.go's object store can read the snapshot through an ordered push
// consumer. NATS does not check a push consumer's deliver subject against
// its creator's permissions: the server itself publishes each message to
// it. A consumer of the bucket delivering into keyledger.events.> would
// have the server write the snapshot's messages into the event stream, and
// one delivering into $JS.API.> would make requests in the account's name.
func TestAttackSubscriberSnapshotConsumerCannotDeliverIntoTheStream(t *testing.T) {
	emb, err := natsembed.Start(natsembed.Config{Dir: t.TempDir(), Listen: "127.0.0.1:0", Logger: natstest.Quiet()})
	if err != nil {
		t.Fatal(err)
	}
	defer emb.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	svcJS, _ := jetstream.New(emb.Conn)
	store, err := events.Open(ctx, svcJS, events.Config{Logger: natstest.Quiet(), Signer: newSigner(t)})
	if err != nil {
		t.Fatal(err)
	}
	k, err := (&domain.Keys{Store: store}).Create(ctx, domain.CreateKey{OrgID: "acme", Name: "k", By: asSystem})
	if err != nil {
		t.Fatal(err)
	}
	snaps, err := events.OpenSnapshots(ctx, svcJS, store, 1)
	if err != nil {
		t.Fatal(err)
	}
	if err := snaps.Put(ctx, bytes.NewReader(bytes.Repeat([]byte("snapshot\n"), 100))); err != nil {
		t.Fatal(err)
	}
	nk, err := nats.NkeyOptionFromSeed(emb.Credentials.Subscriber)
	if err != nil {
		t.Fatal(err)
	}
	quiet := nats.ErrorHandler(func(*nats.Conn, *nats.Subscription, error) {})
	nc, err := nats.Connect(emb.ClientURL(), nk, nats.MaxReconnects(0), quiet, nats.CustomInboxPrefix(events.SubscriberInbox))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()

	for i, c := range []struct{ stream, deliver string }{
		{events.SnapshotStream, events.Subject("acme", k.Key.ID, domain.TypeKeyRevoked)},
		{events.SnapshotStream, "$JS.API.STREAM.PURGE." + events.StreamName},
		{events.SnapshotStream, "$JS.API.STREAM.DELETE." + events.StreamName},
		// The event stream's own consumers stay allowed: NATS refuses a
		// deliver subject inside the stream's subjects (a cycle).
		{events.StreamName, events.Subject("acme", k.Key.ID, domain.TypeKeyRevoked)},
		{events.StreamName, events.CheckpointSubject},
	} {
		deliver := c.deliver
		// Interest in the deliver subject makes the push consumer deliver;
		// the subscriber may listen on the event subjects.
		if sub, err := nc.SubscribeSync(deliver); err == nil {
			defer sub.Unsubscribe()
		}
		_ = nc.Flush()
		before, _ := store.LastSeq(ctx)
		name := "attack" + string(rune('a'+i))
		req, _ := json.Marshal(map[string]any{"stream_name": c.stream, "config": map[string]any{
			"name": name, "deliver_subject": deliver, "deliver_policy": "all", "ack_policy": "none",
		}})
		resp, err := nc.Request("$JS.API.CONSUMER.CREATE."+c.stream+"."+name, req, 2*time.Second)
		if err == nil {
			t.Logf("consumer delivering to %s: %s", deliver, resp.Data)
		}
		time.Sleep(500 * time.Millisecond)
		after, err := store.LastSeq(ctx)
		if err != nil || after != before {
			t.Errorf("a subscriber's consumer of %s delivering to %s: the event stream went from %d to %d (%v)", c.stream, deliver, before, after, err)
		}
	}
}

// TestAttackSnapshotBytesAreCheckedBeforeAnyIsRead: the signature covers the
// object's digest and size, and nats.go checks the digest only at the end
// of the read. A holder of the service credential can point the signed
// metadata at chunks of its own (a new NUID, the signer's fields copied):
// the decoder then parsed bytes nobody signed, and an s2 stream a few
// kilobytes long that inflates to gigabytes was held in memory before the
// digest check at the end could refuse it. Get now reads the object, at
// most its signed size, and checks the digest before it hands out a byte.
func TestAttackSnapshotBytesAreCheckedBeforeAnyIsRead(t *testing.T) {
	emb, err := natsembed.Start(natsembed.Config{Dir: t.TempDir(), Listen: "127.0.0.1:0", Logger: natstest.Quiet()})
	if err != nil {
		t.Fatal(err)
	}
	defer emb.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	svcJS, _ := jetstream.New(emb.Conn)
	store, err := events.Open(ctx, svcJS, events.Config{Logger: natstest.Quiet(), Signer: newSigner(t)})
	if err != nil {
		t.Fatal(err)
	}
	snaps, err := events.OpenSnapshots(ctx, svcJS, store, 1)
	if err != nil {
		t.Fatal(err)
	}
	if err := snaps.Put(ctx, bytes.NewReader(bytes.Repeat([]byte("the signed snapshot\n"), 20000))); err != nil {
		t.Fatal(err)
	}
	obs, err := svcJS.ObjectStore(ctx, events.SnapshotBucket)
	if err != nil {
		t.Fatal(err)
	}
	info, err := obs.GetInfo(ctx, "projections")
	if err != nil {
		t.Fatal(err)
	}
	for _, forged := range [][]byte{
		[]byte("forged bytes, not the signed ones"),
		bytes.Repeat([]byte("longer than the signed size "), 20000),
	} {
		info.NUID = nats.NewInbox()[len(nats.InboxPrefix):]
		if _, err := svcJS.Publish(ctx, "$O."+events.SnapshotBucket+".C."+info.NUID, forged); err != nil {
			t.Fatal(err)
		}
		meta, _ := json.Marshal(info)
		if _, err := svcJS.Publish(ctx, "$O."+events.SnapshotBucket+".M."+base64.URLEncoding.EncodeToString([]byte("projections")), meta); err != nil {
			t.Fatal(err)
		}
		rc, err := snaps.Get(ctx)
		if err == nil {
			head := make([]byte, 6)
			n, _ := io.ReadFull(rc, head)
			rc.Close()
			t.Errorf("Get handed out a snapshot of chunks nobody signed (it reads %q)", head[:n])
		}
	}
}

// TestAttackSnapshotSeqHashIsTheStoredMessage (held): a snapshot is tied
// to the stream by the hash of the message at its sequence, and the
// table's last sequence may be junk that the service credential published.
// MsgHash reads it through nats.go's GetMsg (a direct get), whose batch
// form took stored headers for the server's (Scale, issue 20): a stored
// "Status: 404" would tie a snapshot to no message, "Status: 503" fail
// every snapshot taken there. The single get takes the server's status:
// the hash is of the body the server stored.
func TestAttackSnapshotSeqHashIsTheStoredMessage(t *testing.T) {
	emb, err := natsembed.Start(natsembed.Config{Dir: t.TempDir(), Listen: "127.0.0.1:0", Logger: natstest.Quiet()})
	if err != nil {
		t.Fatal(err)
	}
	defer emb.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	svcJS, _ := jetstream.New(emb.Conn)
	store, err := events.Open(ctx, svcJS, events.Config{Logger: natstest.Quiet(), Signer: newSigner(t)})
	if err != nil {
		t.Fatal(err)
	}
	snaps, err := events.OpenSnapshots(ctx, svcJS, store, 1)
	if err != nil {
		t.Fatal(err)
	}
	for _, status := range []string{"404", "503"} {
		junk := &nats.Msg{Subject: events.Subject("acme", "key_junk", domain.TypeKeyRevoked), Data: []byte("junk " + status), Header: nats.Header{}}
		junk.Header.Set("Status", status)
		ack, err := svcJS.PublishMsg(ctx, junk)
		if err != nil {
			t.Fatal(err)
		}
		got, err := snaps.MsgHash(ctx, ack.Sequence)
		if want := events.BodyHash(junk.Data); got != want || err != nil {
			t.Errorf("MsgHash of junk with a stored Status: %s header = %q, %v; want the hash of its body %q", status, got, err, want)
		}
	}
}

// TestAttackSnapshotChunkHeadersCannotStallTheRead: Get reads the chunks by
// direct gets, and nats.go takes a direct get's sequence from the first
// Nats-Sequence header, which a chunk's publisher may write itself. An
// empty chunk saying "Nats-Sequence: 0", under signed metadata naming it,
// would send the read back to the same chunk for ever: the start never
// ready. A read that makes no progress is refused.
func TestAttackSnapshotChunkHeadersCannotStallTheRead(t *testing.T) {
	emb, err := natsembed.Start(natsembed.Config{Dir: t.TempDir(), Listen: "127.0.0.1:0", Logger: natstest.Quiet()})
	if err != nil {
		t.Fatal(err)
	}
	defer emb.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	svcJS, _ := jetstream.New(emb.Conn)
	store, err := events.Open(ctx, svcJS, events.Config{Logger: natstest.Quiet(), Signer: newSigner(t)})
	if err != nil {
		t.Fatal(err)
	}
	snaps, err := events.OpenSnapshots(ctx, svcJS, store, 1)
	if err != nil {
		t.Fatal(err)
	}
	if err := snaps.Put(ctx, bytes.NewReader(bytes.Repeat([]byte("the signed snapshot\n"), 100))); err != nil {
		t.Fatal(err)
	}
	obs, err := svcJS.ObjectStore(ctx, events.SnapshotBucket)
	if err != nil {
		t.Fatal(err)
	}
	info, err := obs.GetInfo(ctx, "projections")
	if err != nil {
		t.Fatal(err)
	}
	info.NUID = nats.NewInbox()[len(nats.InboxPrefix):]
	chunk := &nats.Msg{Subject: "$O." + events.SnapshotBucket + ".C." + info.NUID, Header: nats.Header{}}
	chunk.Header.Set("Nats-Sequence", "0")
	if _, err := svcJS.PublishMsg(ctx, chunk); err != nil {
		t.Fatal(err)
	}
	meta, _ := json.Marshal(info)
	if _, err := svcJS.Publish(ctx, "$O."+events.SnapshotBucket+".M."+base64.URLEncoding.EncodeToString([]byte("projections")), meta); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	gctx, gcancel := context.WithCancel(ctx)
	defer gcancel()
	go func() {
		rc, err := snaps.Get(gctx)
		if err == nil {
			rc.Close()
		}
		done <- err
	}()
	select {
	case err := <-done:
		if err == nil {
			t.Error("Get handed out a snapshot of chunks nobody signed")
		}
	case <-time.After(5 * time.Second):
		t.Error("Get still reading after 5 s: a chunk's own Nats-Sequence header sent it back to the same chunk")
	}
}
