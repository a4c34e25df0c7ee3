package natsembed_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"

	"github.com/keyledger/keyledger/domain"
	"github.com/keyledger/keyledger/events"
	"github.com/keyledger/keyledger/events/natsembed"
	"github.com/keyledger/keyledger/internal/natstest"
)

// TestAttackSubscriberStreamConsumerCannotDeliverIntoTheAPI: the subscriber
// may create consumers of KEYLEDGER (the verifier and auditors read it so),
// and NATS checks a push consumer's deliver subject only against the
// stream's own subjects (a cycle), never against its creator's
// permissions: the server publishes each event to it in the account's
// name. A consumer of the event stream delivering into $JS.API.STREAM.
// DELETE.KEYLEDGER, or into another stream's subjects (the buckets), would
// act with the account's rights, not the read-only user's.
func TestAttackSubscriberStreamConsumerCannotDeliverIntoTheAPI(t *testing.T) {
	emb, err := natsembed.Start(natsembed.Config{Dir: t.TempDir(), Listen: "127.0.0.1:0", Logger: natstest.Quiet()})
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
	if _, err := (&domain.Keys{Store: store}).Create(ctx, domain.CreateKey{OrgID: "acme", Name: "k", By: asSystem}); err != nil {
		t.Fatal(err)
	}
	kv, err := svcJS.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: events.IdempotencyBucket})
	if err != nil {
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

	for i, deliver := range []string{
		"$JS.API.STREAM.PURGE." + events.StreamName,
		"$JS.API.STREAM.DELETE." + events.StreamName,
		"$KV." + events.IdempotencyBucket + ".forged",
	} {
		name := "attack" + string(rune('a'+i))
		req, _ := json.Marshal(map[string]any{"stream_name": events.StreamName, "config": map[string]any{
			"name": name, "deliver_subject": deliver, "deliver_policy": "all", "ack_policy": "none",
		}})
		resp, err := nc.Request("$JS.API.CONSUMER.CREATE."+events.StreamName+"."+name, req, 2*time.Second)
		if err == nil {
			t.Logf("consumer delivering to %s: %s", deliver, resp.Data)
		}
		time.Sleep(time.Second)
		info, err := svcJS.Stream(ctx, events.StreamName)
		if err != nil {
			t.Fatalf("a subscriber's consumer of %s delivering to %s: the stream is gone: %v", events.StreamName, deliver, err)
		}
		if info.CachedInfo().State.Msgs == 0 {
			t.Fatalf("a subscriber's consumer delivering to %s: the stream is empty", deliver)
		}
	}
	if _, err := kv.Get(ctx, "forged"); err == nil {
		t.Errorf("a subscriber's consumer of %s wrote into the bucket %s", events.StreamName, events.IdempotencyBucket)
	}
}

// TestAttackSubscriberRepliesCannotLandInTheAccount: NATS does not check a
// request's reply subject against the publisher's permissions, and
// JetStream answers in the account's name. A read-only user asking for a
// stream info, a message, a consumer or a pull with the reply subject set
// to $JS.API.STREAM.DELETE.KEYLEDGER, to an event subject or to a bucket's
// subject had the server make the request, or store the answer, for it:
// the answers of STREAM.INFO and STREAM.MSG.GET landed in KEYLEDGER. The
// subscriber is now in an account of its own (natsembed.ReadAccount) that
// imports what it reads, so every answer goes back across the import.
func TestAttackSubscriberRepliesCannotLandInTheAccount(t *testing.T) {
	emb, err := natsembed.Start(natsembed.Config{Dir: t.TempDir(), Listen: "127.0.0.1:0", Logger: natstest.Quiet()})
	if err != nil {
		t.Fatal(err)
	}
	defer emb.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
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
	natstest.SubscriberAnswersStayInItsAccount(t, ctx, svcJS, nc, events.Subject("acme", k.Key.ID, domain.TypeKeyRevoked))
}

// TestAttackSubscriberJunkOnAKeyDoesNotBlockItsRevocation: what the
// subscriber once wrote into KEYLEDGER through a reply subject (a
// JetStream API answer, not an event; it no longer lands, see above) must
// not stop the key it would land on from being revoked, nor be read as
// one of its events.
func TestAttackSubscriberJunkOnAKeyDoesNotBlockItsRevocation(t *testing.T) {
	emb, err := natsembed.Start(natsembed.Config{Dir: t.TempDir(), Listen: "127.0.0.1:0", Logger: natstest.Quiet()})
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
	k, err := keys.Create(ctx, domain.CreateKey{OrgID: "acme", Name: "k", By: asSystem})
	if err != nil {
		t.Fatal(err)
	}
	nk, err := nats.NkeyOptionFromSeed(emb.Credentials.Subscriber)
	if err != nil {
		t.Fatal(err)
	}
	nc, err := nats.Connect(emb.ClientURL(), nk, nats.MaxReconnects(0), nats.CustomInboxPrefix(events.SubscriberInbox))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	for _, typ := range []domain.EventType{domain.TypeKeyRevoked, domain.TypeKeyCreated, domain.TypeKeyRotated} {
		if err := nc.PublishMsg(&nats.Msg{Subject: "$JS.API.STREAM.INFO." + events.StreamName, Reply: events.Subject("acme", k.Key.ID, typ)}); err != nil {
			t.Fatal(err)
		}
	}
	_ = nc.Flush()
	time.Sleep(500 * time.Millisecond)
	got, err := keys.Revoke(ctx, "acme", k.Key.ID, domain.RevokeKey{Reason: "leaked", By: asSystem})
	if err != nil {
		t.Fatalf("revoking a key the subscriber wrote junk onto: %v", err)
	}
	if got.Status(time.Now()) != domain.StatusRevoked {
		t.Errorf("the key is %v after its revocation, want revoked", got.Status(time.Now()))
	}
}

// TestAttackServiceCannotDeleteTheStreamThroughItsDomain: a server with a
// JetStream domain (the hub of an edge site, deploy/hub-leafnodes.conf)
// maps $JS.<domain>.API.> onto $JS.API.> in every account a leaf node
// connects for, and NATS checks permissions on the subject as published,
// before the mapping. The service user's denials named only
// $JS.API.STREAM.DELETE.KEYLEDGER and its kin: once an edge site was
// connected, $JS.hub.API.STREAM.DELETE.KEYLEDGER deleted the history.
func TestAttackServiceCannotDeleteTheStreamThroughItsDomain(t *testing.T) {
	svcKP, _ := nkeys.CreateUser()
	svcPub, _ := svcKP.PublicKey()
	hubOpts := &server.Options{ServerName: "hub", Host: "127.0.0.1", Port: -1, JetStream: true, JetStreamDomain: "hub", StoreDir: t.TempDir(),
		NoLog: true, NoSigs: true, Nkeys: []*server.NkeyUser{{Nkey: svcPub, Permissions: natsembed.ServicePermissions()}}}
	hubOpts.LeafNode.Host, hubOpts.LeafNode.Port = "127.0.0.1", -1
	hubOpts.LeafNode.Username, hubOpts.LeafNode.Password = "edge", "edge-password"
	hub := runServer(t, hubOpts)
	leafURL, _ := url.Parse(fmt.Sprintf("nats-leaf://edge:edge-password@127.0.0.1:%d", hubOpts.LeafNode.Port))
	edge := runServer(t, &server.Options{ServerName: "edge", Host: "127.0.0.1", Port: -1, NoLog: true, NoSigs: true,
		LeafNode: server.LeafNodeOpts{Remotes: []*server.RemoteLeafOpts{{URLs: []*url.URL{leafURL}}}}})
	for deadline := time.Now().Add(10 * time.Second); hub.NumLeafNodes() == 0 || edge.NumLeafNodes() == 0; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the edge did not connect")
		}
	}
	seed, _ := svcKP.Seed()
	nc, err := nats.Connect(hub.ClientURL(), nats.Nkey(svcPub, func(n []byte) ([]byte, error) {
		kp, _ := nkeys.FromSeed(seed)
		return kp.Sign(n)
	}), nats.ErrorHandler(func(*nats.Conn, *nats.Subscription, error) {}))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	js, _ := jetstream.New(nc)
	store, err := events.Open(ctx, js, events.Config{Logger: natstest.Quiet(), Signer: newSigner(t)})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := (&domain.Keys{Store: store}).Create(ctx, domain.CreateKey{OrgID: "acme", Name: "k", By: asSystem}); err != nil {
		t.Fatal(err)
	}
	if resp, err := nc.Request("$JS.hub.API.INFO", nil, 2*time.Second); err != nil {
		t.Logf("$JS.hub.API.INFO: %v", err)
	} else {
		t.Logf("$JS.hub.API.INFO: %.100s", resp.Data)
	}
	for _, op := range []string{"STREAM.PURGE.", "STREAM.DELETE."} {
		subject := "$JS.hub.API." + op + events.StreamName
		if resp, err := nc.Request(subject, nil, 2*time.Second); err == nil {
			t.Logf("%s: %s", subject, resp.Data)
		}
		s, err := js.Stream(ctx, events.StreamName)
		if err != nil {
			t.Fatalf("the service user's %s: the stream is gone (%v)", subject, err)
		}
		if s.CachedInfo().State.Msgs == 0 {
			t.Errorf("the service user's %s: the stream is empty", subject)
		}
	}
}

func runServer(t *testing.T, opts *server.Options) *server.Server {
	t.Helper()
	ns, err := server.NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	ns.Start()
	t.Cleanup(ns.Shutdown)
	if !ns.ReadyForConnections(10 * time.Second) {
		t.Fatal("server not ready")
	}
	return ns
}
