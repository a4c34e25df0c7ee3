package verifier_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"strconv"
	"testing"
	"time"

	"github.com/keyledger/keyledger/domain"
	"github.com/keyledger/keyledger/events"
	"github.com/keyledger/keyledger/internal/natstest"
	"github.com/keyledger/keyledger/verifier"
)

// TestAttackSnapshotTakenUnderAnOldTrustSetRevivesAStolenKeysMint: a
// signing key is stolen and mints a key; the operator retires the stolen
// key after the sequence it was stolen at. Running instances judge the
// stream again (SIGHUP), but the snapshot in the bucket was taken, and
// signed by a key still trusted, under the old trust set, and holds the
// minted key as valid: a verifier given the new trust set started from it
// and answered VALID, where a full replay answers NOT_FOUND. Whoever holds
// the service credential could put that snapshot back at any later time.
func TestAttackSnapshotTakenUnderAnOldTrustSetRevivesAStolenKeysMint(t *testing.T) {
	env := natstest.StartListening(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	by := domain.SystemPrincipal("test", "test")
	if _, err := (&domain.Keys{Store: env.Store}).Create(ctx, domain.CreateKey{OrgID: "acme", Name: "genuine", By: by}); err != nil {
		t.Fatal(err)
	}
	stolenAfter := env.LastSeq(t)

	_, stolenPriv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	stolen := events.NewSigner(stolenPriv)
	oldTrust := events.NewSigners(env.Signer.Public(), stolen.Public())
	thief, err := events.Attach(ctx, env.JS, events.Config{Logger: natstest.Quiet(), Signer: stolen, Signers: oldTrust})
	if err != nil {
		t.Fatal(err)
	}
	minted, err := (&domain.Keys{Store: thief}).Create(ctx, domain.CreateKey{OrgID: "acme", Name: "minted", Scopes: []string{domain.ScopeManage}, By: by})
	if err != nil {
		t.Fatal(err)
	}
	// The deployment's own instance, still on the old trust set, saves a
	// snapshot: signed by its key, which stays trusted.
	instance, err := events.Attach(ctx, env.JS, events.Config{Logger: natstest.Quiet(), Signer: env.Signer, Signers: oldTrust})
	if err != nil {
		t.Fatal(err)
	}
	saveSnapshot(t, env, instance)

	newTrust := retire(t, env.Signer.Public(), stolen.Public(), stolenAfter)
	replayed := readyVerifier(t, env, verifier.Options{Signers: newTrust, FullReplay: true})
	if got := replayed.Verify(minted.Secret).Code; got != domain.VerifyNotFound {
		t.Fatalf("full replay under the new trust set: the stolen key's mint verifies %s, want NOT_FOUND", got)
	}
	v := readyVerifier(t, env, verifier.Options{Signers: newTrust})
	if got := v.Verify(minted.Secret).Code; got != domain.VerifyNotFound {
		t.Errorf("from the snapshot taken under the old trust set (StartedAfter %d): the stolen key's mint verifies %s, want NOT_FOUND", v.StartedAfter(), got)
	}
}

// retire is a trust set of keep, and of stolen retired after seq.
func retire(t *testing.T, keep, stolen ed25519.PublicKey, seq uint64) *events.Signers {
	t.Helper()
	var raw []byte
	for _, k := range []ed25519.PublicKey{keep, stolen} {
		der, err := x509.MarshalPKIXPublicKey(k)
		if err != nil {
			t.Fatal(err)
		}
		b := &pem.Block{Type: "PUBLIC KEY", Bytes: der}
		if k.Equal(stolen) {
			b.Headers = map[string]string{events.RetiredAfterHeader: strconv.FormatUint(seq, 10)}
		}
		raw = append(raw, pem.EncodeToMemory(b)...)
	}
	s, err := events.ParseSigners(raw)
	if err != nil {
		t.Fatal(err)
	}
	return s
}
