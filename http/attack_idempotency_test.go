package http_test

import (
	"bytes"
	"context"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/keyledger/keyledger/domain"
	"github.com/keyledger/keyledger/events"
	khttp "github.com/keyledger/keyledger/http"
	"github.com/keyledger/keyledger/internal/natstest"
)

// twoInstances runs two keyledger instances on one NATS, as two processes
// on one cluster, and mints acme's management key, known to both.
func twoInstances(t *testing.T) (env *natstest.Env, a, b *harness, admin string) {
	t.Helper()
	env = natstest.Start(t)
	a, b = instance(t, env, nil), instance(t, env, nil)
	admin = a.bootstrap("acme")
	b.caughtUp()
	return env, a, b, admin
}

// caughtUp waits until the instance has applied the whole stream.
func (h *harness) caughtUp() {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := h.runner.WaitFor(ctx, h.env.LastSeq(h.t)); err != nil {
		h.t.Fatal(err)
	}
}

// keysCreated counts the org's KeyCreated events named name in the stream.
func keysCreated(t *testing.T, h *harness, token, name string) int {
	t.Helper()
	var page orgEventPage
	h.must(http.StatusOK, "GET", "/v1/orgs/acme/events?type=KeyCreated&limit=1000", token, nil).json(t, &page)
	n := 0
	for _, e := range page.Events {
		if strings.Contains(string(e.Data), `"name":"`+name+`"`) {
			n++
		}
	}
	return n
}

// TestAttackIdempotencyHoldsAcrossInstances retries a create, and a
// rotation, with the same Idempotency-Key on another instance: the same
// key and secret come back, replayed, and the stream holds one event. The
// answer rests in NATS sealed: the bucket's files never hold the secret,
// another credential cannot replay it, another body is refused.
func TestAttackIdempotencyHoldsAcrossInstances(t *testing.T) {
	env, a, b, admin := twoInstances(t)
	body := map[string]any{"name": "retried", "scopes": []string{"read"}}
	ik := []string{"Idempotency-Key", "create-once"}

	var first, again issued
	a.must(http.StatusCreated, "POST", "/v1/orgs/acme/keys", admin, body, ik...).json(t, &first)
	res := b.must(http.StatusCreated, "POST", "/v1/orgs/acme/keys", admin, body, ik...)
	res.json(t, &again)
	mustHeader(t, res, "Idempotent-Replayed", "true")
	mustHeader(t, res, "Location", "/v1/orgs/acme/keys/"+first.Key.ID)
	if again.Key.ID != first.Key.ID || again.Secret != first.Secret {
		t.Fatalf("the retry on the other instance answered key %s, want %s and the same secret", again.Key.ID, first.Key.ID)
	}
	if got := keysCreated(t, a, admin, "retried"); got != 1 {
		t.Fatalf("the stream holds %d KeyCreated for one create retried on two instances, want 1", got)
	}

	// A rotation too.
	target := a.create("acme", admin, map[string]any{"name": "rotated once"})
	b.caughtUp()
	rot := []string{"Idempotency-Key", "rotate-once"}
	var rotated, replayed issued
	a.must(http.StatusOK, "POST", "/v1/orgs/acme/keys/"+target.Key.ID+"/rotate", admin, nil, rot...).json(t, &rotated)
	res = b.must(http.StatusOK, "POST", "/v1/orgs/acme/keys/"+target.Key.ID+"/rotate", admin, nil, rot...)
	res.json(t, &replayed)
	mustHeader(t, res, "Idempotent-Replayed", "true")
	if replayed.Secret != rotated.Secret || replayed.Key.Version != rotated.Key.Version {
		t.Errorf("the rotation retried on the other instance answered version %d, want %d and the same secret", replayed.Key.Version, rotated.Key.Version)
	}
	if got := b.verify(rotated.Secret); got.Code != domain.VerifyValid {
		t.Errorf("the rotated secret: %s, want VALID (rotated once, not twice)", got.Code)
	}

	// The same key with another body, on either instance.
	for _, h := range []*harness{a, b} {
		if res := h.must(http.StatusConflict, "POST", "/v1/orgs/acme/keys", admin, map[string]any{"name": "another"}, ik...); res.errorCode() != "conflict" {
			t.Errorf("another body: %s", res.body)
		}
	}

	// Another credential with the same Idempotency-Key has its own: a new key.
	other := a.bootstrap("acme")
	b.caughtUp()
	var theirs issued
	res = b.must(http.StatusCreated, "POST", "/v1/orgs/acme/keys", other, body, ik...)
	res.json(t, &theirs)
	if res.Header.Get("Idempotent-Replayed") != "" || theirs.Key.ID == first.Key.ID || theirs.Secret == first.Secret {
		t.Errorf("another credential's create with the same Idempotency-Key was given the first answer")
	}

	// The same caller with another credential (its new value, rotated
	// with a grace period) cannot open the answer on an instance that
	// does not hold it in memory.
	adminID := verifiedKeyID(t, a, admin)
	var fresh issued
	a.must(http.StatusOK, "POST", "/v1/orgs/acme/keys/"+adminID+"/rotate", admin, map[string]any{"grace_period_seconds": 3600}).json(t, &fresh)
	c := instance(t, env, nil)
	res = c.must(http.StatusConflict, "POST", "/v1/orgs/acme/keys", fresh.Secret, body, ik...)
	if !strings.Contains(string(res.body), "credential") || strings.Contains(string(res.body), first.Secret) {
		t.Errorf("a retry with another credential of the same caller: %s", res.body)
	}

	// What rests in NATS: the bucket's files hold the answer's key id (in
	// the clear, in Location) but never its secret.
	a.stop()
	b.stop()
	c.stop()
	env.Stop()
	var bucketFiles int
	_ = filepath.WalkDir(env.Dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		raw, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		if strings.Contains(path, "KEYLEDGER_IDEMPOTENCY") && bytes.Contains(raw, []byte(first.Key.ID)) {
			bucketFiles++
		}
		for _, s := range []string{first.Secret, first.Secret[4:40], rotated.Secret, rotated.Secret[4:40]} {
			if bytes.Contains(raw, []byte(s)) {
				t.Errorf("%s holds a secret", path)
			}
		}
		return nil
	})
	if bucketFiles == 0 {
		t.Fatal("no file of the idempotency bucket holds the answer's key id: the search proves nothing")
	}
}

// verifiedKeyID is the key id of a secret, as the instance verifies it.
func verifiedKeyID(t *testing.T, h *harness, secret string) string {
	t.Helper()
	v := h.verify(secret)
	if v.KeyID == nil {
		t.Fatalf("the secret verifies %s", v.Code)
	}
	return *v.KeyID
}

// TestIdempotencyAfterAFailedAnswer: a request that failed released its
// claim, so a retry with the same Idempotency-Key, on another instance,
// runs again; an instance whose bucket cannot be reached keeps the key on
// its own, and says so.
func TestIdempotencyAfterAFailedAnswer(t *testing.T) {
	_, a, b, admin := twoInstances(t)
	ik := []string{"Idempotency-Key", "fixed-on-retry"}
	a.must(http.StatusBadRequest, "POST", "/v1/orgs/acme/keys", admin, map[string]any{"name": ""}, ik...)
	res := b.must(http.StatusCreated, "POST", "/v1/orgs/acme/keys", admin, map[string]any{"name": "fixed"}, ik...)
	if res.Header.Get("Idempotent-Replayed") != "" {
		t.Error("the corrected retry was answered from a failed first attempt")
	}
	mustHeader(t, a.must(http.StatusCreated, "POST", "/v1/orgs/acme/keys", admin, map[string]any{"name": "fixed"}, ik...), "Idempotent-Replayed", "true")
}

func TestIdempotencyWithoutTheBucketHoldsOnOneInstance(t *testing.T) {
	gone := natstest.Start(t)
	bucket, err := events.OpenIdempotency(context.Background(), gone.JS, 1)
	if err != nil {
		t.Fatal(err)
	}
	gone.Stop()
	h := startWith(t, t.TempDir(), func(s *khttp.Server) { s.Idempotency = bucket })
	admin := h.bootstrap("acme")
	body, ik := map[string]any{"name": "local"}, []string{"Idempotency-Key", "k"}
	var first, again issued
	h.must(http.StatusCreated, "POST", "/v1/orgs/acme/keys", admin, body, ik...).json(t, &first)
	res := h.must(http.StatusCreated, "POST", "/v1/orgs/acme/keys", admin, body, ik...)
	res.json(t, &again)
	mustHeader(t, res, "Idempotent-Replayed", "true")
	if again.Key.ID != first.Key.ID {
		t.Errorf("replayed %s, want %s", again.Key.ID, first.Key.ID)
	}
	if !strings.Contains(h.logs.String(), "idempotency bucket unreachable: this Idempotency-Key holds on this instance only") {
		t.Errorf("no log line says the key holds on this instance only:\n%s", h.logs)
	}
	if strings.Contains(h.logs.String(), first.Secret) {
		t.Error("the log holds the secret")
	}
}
