package verifier_test

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/keyledger/keyledger/domain"
	"github.com/keyledger/keyledger/events"
	"github.com/keyledger/keyledger/internal/natstest"
	"github.com/keyledger/keyledger/verifier"
)

// TestAttackReplayedRotationRevivesASecretInTheVerifier: the insider
// republishes a genuine, signed KeyRotated (subject, body, signature
// headers; no Nats-Msg-Id). Every service's verifier takes it as
// keyledger's, as serve does (http: the same attack): the value that
// rotation issued, since rotated away, verifies VALID again in the
// service, and the key's current value stops working.
func TestAttackReplayedRotationRevivesASecretInTheVerifier(t *testing.T) {
	env := natstest.StartListening(t)
	ctx := context.Background()
	keys := &domain.Keys{Store: env.Store}
	by := domain.SystemPrincipal("test", "test")
	k, err := keys.Create(ctx, domain.CreateKey{OrgID: "acme", Name: "checkout", Scopes: []string{"orders:read"}, By: by})
	if err != nil {
		t.Fatal(err)
	}
	leaked, err := keys.Rotate(ctx, "acme", k.Key.ID, domain.RotateKey{By: by})
	if err != nil {
		t.Fatal(err)
	}
	current, err := keys.Rotate(ctx, "acme", k.Key.ID, domain.RotateKey{By: by})
	if err != nil {
		t.Fatal(err)
	}
	stream, err := env.JS.Stream(ctx, events.StreamName)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := stream.GetMsg(ctx, leaked.Key.Version)
	if err != nil {
		t.Fatal(err)
	}
	copied := &nats.Msg{Subject: raw.Subject, Data: raw.Data, Header: nats.Header{}}
	for _, name := range []string{events.SignerHeader, events.SignatureHeader} {
		copied.Header[name] = raw.Header[name]
	}
	ack, err := env.JS.PublishMsg(ctx, copied)
	if err != nil {
		t.Fatal(err)
	}

	v := startVerifier(t, env, env.Embedded.ClientURL(), verifier.Options{})
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := v.WaitFor(wctx, ack.Sequence); err != nil {
		t.Fatal(err)
	}
	if got := v.Verify(leaked.Secret); got.Valid() {
		t.Errorf("the rotated-away value verifies %s in the service after a copy of its rotation was republished", got.Code)
	}
	if got := v.Verify(current.Secret); !got.Valid() {
		t.Errorf("the key's current value verifies %s in the service, want VALID", got.Code)
	}
}
