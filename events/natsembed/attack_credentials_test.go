package natsembed_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/keyledger/keyledger/domain"
	"github.com/keyledger/keyledger/events"
	"github.com/keyledger/keyledger/events/natsembed"
	"github.com/keyledger/keyledger/internal/natstest"
)

// TestAttackSubscriberReadsOnlyWhatAVerifierNeeds replays item 8 of the
// attack: the read-only subscriber credential could read every other
// client's replies (_INBOX.>: usage and snapshot data among them) and
// delete any consumer of the stream. It now has an inbox of its own and
// only what a verifier (and an auditor) needs.
func TestAttackSubscriberReadsOnlyWhatAVerifierNeeds(t *testing.T) {
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
	if _, err := (&domain.Keys{Store: store}).Create(ctx, domain.CreateKey{OrgID: "acme", Name: "k", By: asSystem}); err != nil {
		t.Fatal(err)
	}
	stream, _ := svcJS.Stream(ctx, events.StreamName)
	if _, err := stream.CreateOrUpdateConsumer(ctx, jetstream.ConsumerConfig{Durable: "billing-service", AckPolicy: jetstream.AckExplicitPolicy}); err != nil {
		t.Fatal(err)
	}
	nk, err := nats.NkeyOptionFromSeed(emb.Credentials.Subscriber)
	if err != nil {
		t.Fatal(err)
	}
	quiet := nats.ErrorHandler(func(*nats.Conn, *nats.Subscription, error) {})

	t.Run("CannotReadOtherClientsReplies", func(t *testing.T) {
		nc, err := nats.Connect(emb.ClientURL(), nk, quiet, nats.PermissionErrOnSubscribe(true))
		if err != nil {
			t.Fatal(err)
		}
		defer nc.Close()
		sub, err := nc.SubscribeSync("_INBOX.>")
		if err != nil {
			t.Fatal(err)
		}
		_ = nc.Flush()
		if _, err := store.LastSeq(ctx); err != nil { // the service asks; its answer comes to its inbox
			t.Fatal(err)
		}
		if m, err := sub.NextMsg(2 * time.Second); err == nil {
			t.Errorf("the subscriber read a reply meant for the service on %s: %.80s", m.Subject, m.Data)
		} else if !errors.Is(err, nats.ErrPermissionViolation) {
			t.Logf("no reply read (%v)", err)
		}
	})

	nc, err := nats.Connect(emb.ClientURL(), nk, quiet, nats.CustomInboxPrefix(events.SubscriberInbox))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.NewWithDomain(nc, events.SubscriberDomain)

	t.Run("CannotDeleteAnotherClientsConsumer", func(t *testing.T) {
		if err := js.DeleteConsumer(short(t), events.StreamName, "billing-service"); err == nil {
			t.Error("the subscriber deleted another client's consumer")
		}
		if _, err := stream.Consumer(ctx, "billing-service"); err != nil {
			t.Errorf("the consumer is gone: %v", err)
		}
	})

	t.Run("CannotListConsumers", func(t *testing.T) {
		s, err := js.Stream(ctx, events.StreamName)
		if err != nil {
			t.Fatal(err)
		}
		names := s.ConsumerNames(short(t))
		for range names.Name() {
			t.Error("the subscriber listed the stream's consumers")
			break
		}
	})

	t.Run("ReadsTheStreamWithItsOwnInbox", func(t *testing.T) {
		s, err := js.Stream(ctx, events.StreamName)
		if err != nil {
			t.Fatalf("stream info: %v", err)
		}
		if _, err := s.GetMsg(ctx, 1); err != nil {
			t.Errorf("the subscriber cannot read the stream through its own inbox: %v", err)
		}
		sub, err := nc.SubscribeSync("keyledger.events.*.*.revoked")
		if err != nil {
			t.Fatalf("a plain subscription to revocations: %v", err)
		}
		_ = sub.Unsubscribe()
	})
}
