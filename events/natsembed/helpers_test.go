package natsembed_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"testing"
	"time"

	"github.com/keyledger/keyledger/domain"
	"github.com/keyledger/keyledger/events"
)

// asSystem is keyledger itself acting, for tests that are not about who may act.
var asSystem = domain.SystemPrincipal("test", "test")

// newSigner is a fresh signing key.
func newSigner(t *testing.T) *events.Signer {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return events.NewSigner(priv)
}

// short is a context for a call the server is expected to leave unanswered.
func short(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	t.Cleanup(cancel)
	return ctx
}
