package natstest

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/keyledger/keyledger/events"
)

// SubscriberAnswersStayInItsAccount asks, as the read-only user nc, every
// JetStream request it may make with a reply subject chosen to land: an
// event subject of the stream (eventSubject, one of a key of it), the
// stream's purge and delete, a bucket's entry, the snapshot's metadata.
// NATS does not check a request's reply subject against its sender's
// permissions, and JetStream answers in the account's name: in the
// service's account, the answers of STREAM.INFO and STREAM.MSG.GET were
// stored in KEYLEDGER. In an account of its own that imports what it
// reads, every answer goes back across the import. svcJS is the
// service's; the stream must exist. Each request is first asked with nc's
// own inbox, and must be answered.
func SubscriberAnswersStayInItsAccount(t *testing.T, ctx context.Context, svcJS jetstream.JetStream, nc *nats.Conn, eventSubject string) {
	t.Helper()
	kv, err := svcJS.KeyValue(ctx, events.IdempotencyBucket)
	if err != nil {
		kv, err = svcJS.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: events.IdempotencyBucket})
	}
	if err != nil {
		t.Fatal(err)
	}
	snaps, err := svcJS.ObjectStore(ctx, events.SnapshotBucket)
	if err != nil {
		snaps, err = svcJS.CreateObjectStore(ctx, jetstream.ObjectStoreConfig{Bucket: events.SnapshotBucket})
	}
	if err != nil {
		t.Fatal(err)
	}
	if _, err := snaps.PutBytes(ctx, "reply-attack", []byte("snapshot")); err != nil {
		t.Fatal(err)
	}
	// Each request is one the subscriber may make, and is answered: asked
	// with its own inbox, it gets an answer.
	api := "$JS." + events.SubscriberDomain + ".API."
	consumer, _ := json.Marshal(map[string]any{"stream_name": events.StreamName, "config": map[string]any{
		"name": "snoop", "deliver_policy": "all", "ack_policy": "none", "inactive_threshold": int64(time.Minute)}})
	requests := []struct {
		subject string
		body    []byte
	}{
		{"$JS.API.STREAM.INFO." + events.StreamName, nil},
		{api + "STREAM.INFO." + events.StreamName, nil},
		{api + "STREAM.MSG.GET." + events.StreamName, []byte(`{"seq":1}`)},
		{api + "DIRECT.GET." + events.StreamName, []byte(`{"seq":1}`)},
		{api + "DIRECT.GET." + events.StreamName, []byte(`{"seq":1,"batch":3}`)},
		{api + "STREAM.INFO." + events.SnapshotStream, nil},
		{api + "DIRECT.GET." + events.SnapshotStream, []byte(`{"last_by_subj":"$O.` + events.SnapshotBucket + `.M.>"}`)},
	}
	for _, r := range requests {
		if _, err := nc.Request(r.subject, r.body, 2*time.Second); err != nil {
			t.Errorf("%s, asked with its own inbox: %v", r.subject, err)
		}
	}
	// A reader makes no consumer (they are refused), nor answers flow
	// control: asked anyway, with the same replies below.
	refused := []struct {
		subject string
		body    []byte
	}{
		{api + "CONSUMER.CREATE." + events.StreamName + ".snoop", consumer},
		{api + "CONSUMER.INFO." + events.StreamName + ".snoop", nil},
		{api + "CONSUMER.MSG.NEXT." + events.StreamName + ".snoop", []byte(`{"batch":2,"expires":500000000}`)},
		{"$JS.API.CONSUMER.CREATE." + events.StreamName + ".snoop", consumer},
		{"$JS.FC." + events.StreamName + ".x.y", nil},
	}
	for _, r := range refused {
		if m, err := nc.Request(r.subject, r.body, 500*time.Millisecond); err == nil && !strings.Contains(string(m.Data), `"error"`) {
			t.Errorf("%s was answered for the read-only user: %.200s", r.subject, m.Data)
		}
	}
	requests = append(requests, refused...)
	replies := []string{
		eventSubject,
		"$JS.API.STREAM.PURGE." + events.StreamName,
		"$JS.API.STREAM.DELETE." + events.StreamName,
		"$JS.API.STREAM.DELETE." + events.SnapshotStream,
		"$KV." + events.IdempotencyBucket + ".forged",
		"$O." + events.SnapshotBucket + ".M.forged",
	}
	state := func() (uint64, uint64, uint64) {
		s, err := svcJS.Stream(ctx, events.StreamName)
		if err != nil {
			t.Fatalf("the stream is gone (%v)", err)
		}
		b, err := svcJS.Stream(ctx, "KV_"+events.IdempotencyBucket)
		if err != nil {
			t.Fatalf("the bucket %s is gone (%v)", events.IdempotencyBucket, err)
		}
		o, err := svcJS.Stream(ctx, events.SnapshotStream)
		if err != nil {
			t.Fatalf("the bucket %s is gone (%v)", events.SnapshotBucket, err)
		}
		return s.CachedInfo().State.LastSeq, b.CachedInfo().State.LastSeq, o.CachedInfo().State.LastSeq
	}
	e0, b0, o0 := state()
	for _, r := range requests {
		for _, reply := range replies {
			if err := nc.PublishMsg(&nats.Msg{Subject: r.subject, Reply: reply, Data: r.body}); err != nil {
				t.Fatal(err)
			}
		}
	}
	_ = nc.Flush()
	time.Sleep(time.Second)
	if e, b, o := state(); e != e0 || b != b0 || o != o0 {
		t.Errorf("answers to the subscriber's requests landed: stream %d→%d, bucket %d→%d, snapshots %d→%d", e0, e, b0, b, o0, o)
	}
	if _, err := kv.Get(ctx, "forged"); err == nil {
		t.Error("an answer landed in the bucket " + events.IdempotencyBucket)
	}
}
