package natsembed_test

import (
	"bytes"
	"context"
	"io"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/keyledger/keyledger/domain"
	"github.com/keyledger/keyledger/events"
	"github.com/keyledger/keyledger/events/natsembed"
	"github.com/keyledger/keyledger/internal/natstest"
	"github.com/keyledger/keyledger/projections"
)

// TestSubscriberCredentialIsReadOnly opens the embedded server's client port
// and checks, over TCP, what each credential may do.
func TestSubscriberCredentialIsReadOnly(t *testing.T) {
	dir := t.TempDir()
	emb, err := natsembed.Start(natsembed.Config{Dir: dir, Listen: "127.0.0.1:0", Logger: natstest.Quiet()})
	if err != nil {
		t.Fatal(err)
	}
	defer emb.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	svcJS, _ := jetstream.New(emb.Conn)
	store, err := events.Open(ctx, svcJS, events.Config{Logger: natstest.Quiet(), Signer: newSigner(t)})
	if err != nil {
		t.Fatal(err)
	}
	keys := &domain.Keys{Store: store}
	real, err := keys.Create(ctx, domain.CreateKey{OrgID: "acme", Name: "real", By: domain.SystemPrincipal("test", "")})
	if err != nil {
		t.Fatal(err)
	}

	for _, path := range []string{emb.Credentials.Service, emb.Credentials.Subscriber} {
		fi, err := os.Stat(path)
		if err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: mode %v, err %v; want 0600", path, fi.Mode().Perm(), err)
		}
	}

	t.Run("NoCredentialIsRefused", func(t *testing.T) {
		if nc, err := nats.Connect(emb.ClientURL(), nats.MaxReconnects(0)); err == nil {
			nc.Close()
			t.Error("connected to the client port without credentials")
		}
	})

	nk, err := nats.NkeyOptionFromSeed(emb.Credentials.Subscriber)
	if err != nil {
		t.Fatal(err)
	}
	// The server answers a denied publish with an asynchronous error only.
	quiet := nats.ErrorHandler(func(*nats.Conn, *nats.Subscription, error) {})
	nc, err := nats.Connect(emb.ClientURL(), nk, nats.MaxReconnects(0), quiet, nats.CustomInboxPrefix(events.SubscriberInbox))
	if err != nil {
		t.Fatalf("subscriber cannot connect: %v", err)
	}
	defer nc.Close()
	js, _ := jetstream.NewWithDomain(nc, events.SubscriberDomain)

	t.Run("SubscriberReadsTheStream", func(t *testing.T) {
		stream, err := js.Stream(ctx, events.StreamName)
		if err != nil {
			t.Fatal(err)
		}
		m, err := stream.GetMsg(ctx, 1)
		if err != nil {
			t.Fatalf("subscriber cannot read the stream: %v", err)
		}
		if !strings.HasSuffix(m.Subject, ".created") {
			t.Errorf("read %s", m.Subject)
		}
		// It reads by direct gets, and makes no consumer (see
		// natsembed.readServices).
		if _, err := stream.OrderedConsumer(short(t), jetstream.OrderedConsumerConfig{}); err == nil {
			t.Error("the subscriber made a consumer of the stream")
		}
	})

	forged, err := domain.GenerateSecret(domain.DefaultPrefix, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Run("SubscriberCannotPublishAnEvent", func(t *testing.T) {
		before, _ := store.LastSeq(ctx)
		e, err := domain.DecideCreate(domain.CreateKey{OrgID: "acme", Name: "forged", Scopes: []string{domain.ScopeManage}, By: asSystem}, time.Now(), 0, forged)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := events.Encode(e)
		if _, err := js.Publish(short(t), events.Subject(e.OrgID, e.KeyID, e.Type), body); err == nil {
			t.Error("the subscriber published a forged KeyCreated")
		}
		if after, _ := store.LastSeq(ctx); after != before {
			t.Errorf("the stream moved from %d to %d", before, after)
		}
	})

	t.Run("SubscriberCannotDeleteOrPurgeTheStream", func(t *testing.T) {
		if err := js.DeleteStream(short(t), events.StreamName); err == nil {
			t.Error("the subscriber deleted the stream")
		}
		if _, err := js.UpdateStream(short(t), jetstream.StreamConfig{Name: events.StreamName, Subjects: []string{">"}}); err == nil {
			t.Error("the subscriber updated the stream")
		}
		if stream, err := js.Stream(short(t), events.StreamName); err != nil || stream.Purge(short(t)) == nil {
			t.Errorf("the subscriber purged the stream (or could not see it: %v)", err)
		}
		if _, err := svcJS.Stream(ctx, events.StreamName); err != nil {
			t.Errorf("the stream is gone: %v", err)
		}
	})

	t.Run("SubscriberReadsTheSnapshotButCannotChangeIt", func(t *testing.T) {
		snaps, err := events.OpenSnapshots(ctx, svcJS, store, 1)
		if err != nil {
			t.Fatal(err)
		}
		want := bytes.Repeat([]byte("a snapshot, as the service signs it\n"), 20000) // several chunks
		if err := snaps.Put(ctx, bytes.NewReader(want)); err != nil {
			t.Fatal(err)
		}
		readBack := func(t *testing.T, js jetstream.JetStream) []byte {
			t.Helper()
			reader, err := events.Attach(ctx, js, events.Config{Logger: natstest.Quiet(), Signers: store.Signers(), ReadOnly: true})
			if err != nil {
				t.Fatal(err)
			}
			rs, err := events.ReadSnapshots(ctx, js, reader)
			if err != nil {
				t.Fatalf("open the bucket to read: %v", err)
			}
			rc, err := rs.Get(ctx)
			if err != nil || rc == nil {
				t.Fatalf("get the snapshot: %v (%v)", err, rc)
			}
			defer rc.Close()
			got, err := io.ReadAll(rc)
			if err != nil {
				t.Fatalf("read the snapshot: %v", err)
			}
			return got
		}
		if got := readBack(t, js); !bytes.Equal(got, want) {
			t.Fatalf("the subscriber read %d bytes of the snapshot, want the %d the service wrote", len(got), len(want))
		}

		obs, err := js.ObjectStore(ctx, events.SnapshotBucket)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := obs.PutBytes(short(t), "projections", []byte("forged")); err == nil {
			t.Error("the subscriber put a snapshot")
		}
		if err := obs.UpdateMeta(short(t), "projections", jetstream.ObjectMeta{Name: "projections", Metadata: map[string]string{"keyledger-signer": "forged"}}); err == nil {
			t.Error("the subscriber changed the snapshot's metadata")
		}
		if err := obs.Delete(short(t), "projections"); err == nil {
			t.Error("the subscriber deleted the snapshot")
		}
		if s, err := js.Stream(short(t), events.SnapshotStream); err != nil || s.Purge(short(t)) == nil {
			t.Errorf("the subscriber purged the snapshot bucket (or could not see it: %v)", err)
		}
		if err := js.DeleteObjectStore(short(t), events.SnapshotBucket); err == nil {
			t.Error("the subscriber deleted the snapshot bucket")
		}
		if got := readBack(t, svcJS); !bytes.Equal(got, want) {
			t.Errorf("the snapshot changed under the subscriber's attempts: %d bytes, want %d", len(got), len(want))
		}
	})

	t.Run("ForgedKeyNeverVerifies", func(t *testing.T) {
		index := projections.NewVerifyIndex()
		runner := projections.NewRunner(store, natstest.Quiet(), index)
		rctx, rcancel := context.WithCancel(ctx)
		defer rcancel()
		go func() { _ = runner.Run(rctx) }()
		last, _ := store.LastSeq(ctx)
		if err := runner.WaitFor(ctx, last); err != nil {
			t.Fatal(err)
		}
		if got := index.Verify(forged, time.Now()).Code; got != domain.VerifyNotFound {
			t.Errorf("forged key verifies %s, want NOT_FOUND", got)
		}
		if got := index.Verify(real.Secret, time.Now()).Code; got != domain.VerifyValid {
			t.Errorf("real key verifies %s, want VALID", got)
		}
	})
}
