package http_test

import (
	"context"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keyledger/keyledger/domain"
	khttp "github.com/keyledger/keyledger/http"
)

// TestAttackManyRotationsKeepBoundedSecrets rotates one key a hundred
// times: the table holds a bounded number of its hashes, the most recently
// replaced secrets still answer EXPIRED (REVOKED once the key is revoked),
// and older ones, or any past the memory period, answer NOT_FOUND.
func TestAttackManyRotationsKeepBoundedSecrets(t *testing.T) {
	var ahead atomic.Int64 // how far the instance's clock runs ahead
	h := startWith(t, t.TempDir(), func(s *khttp.Server) {
		s.Now = func() time.Time { return time.Now().Add(time.Duration(ahead.Load())) }
	})
	admin := h.bootstrap("acme")
	k := h.create("acme", admin, map[string]any{"name": "rotated a lot"})
	secrets := []string{k.Secret}
	const rotations = 100
	for range rotations {
		issued, err := h.keys.Rotate(context.Background(), "acme", k.Key.ID, domain.RotateKey{})
		if err != nil {
			t.Fatal(err)
		}
		secrets = append(secrets, issued.Secret)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := h.runner.WaitFor(ctx, h.env.LastSeq(t)); err != nil {
		t.Fatal(err)
	}

	// The admin's one secret, and the key's current one and the 16 it
	// remembers of those it had.
	if got, want := h.api.Index.Table().Hashes(), 1+1+domain.MaxReplacedSecrets; got != want {
		t.Errorf("after %d rotations the table holds %d hashes, want %d", rotations, got, want)
	}
	current := secrets[rotations]
	remembered := secrets[rotations-domain.MaxReplacedSecrets : rotations]
	forgotten := secrets[:rotations-domain.MaxReplacedSecrets]
	codes := func(secrets []string, want string) {
		t.Helper()
		for i, s := range secrets {
			if got := h.verify(s).Code; got != want {
				t.Errorf("secret %d of %d: %s, want %s", i+1, len(secrets), got, want)
			}
		}
	}
	codes([]string{current}, domain.VerifyValid)
	codes(remembered, domain.VerifyExpired)
	codes(forgotten, domain.VerifyNotFound)

	// Past the memory period even the secret replaced last is forgotten.
	ahead.Store(int64(domain.ReplacedSecretMemory + time.Minute))
	codes([]string{current}, domain.VerifyValid)
	codes(secrets[rotations-1:rotations], domain.VerifyNotFound)
	ahead.Store(0)

	h.must(http.StatusNoContent, "DELETE", "/v1/orgs/acme/keys/"+k.Key.ID, admin, nil)
	codes([]string{current}, domain.VerifyRevoked)
	codes(remembered, domain.VerifyRevoked)
	codes(forgotten, domain.VerifyNotFound)
}
