package http_test

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/keyledger/keyledger/events"
	khttp "github.com/keyledger/keyledger/http"
	"github.com/keyledger/keyledger/internal/natstest"
)

// These tests were written while red-teaming the signing of events (issue
// 15) and the trust items of issue 14. Each shows a hole that is still
// open: it fails on the code as it stands.

// republish copies, as anyone holding the NATS service credential can, the
// message stored at seq — subject, body and keyledger's signature headers,
// not its Nats-Msg-Id — to the end of the stream, and waits until h has
// applied it. The signature covers the subject and the body only: the copy
// verifies as well as the original.
func republish(t *testing.T, h *harness, seq uint64) uint64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	stream, err := h.env.JS.Stream(ctx, events.StreamName)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := stream.GetMsg(ctx, seq)
	if err != nil {
		t.Fatal(err)
	}
	copied := &nats.Msg{Subject: raw.Subject, Data: raw.Data, Header: nats.Header{}}
	for _, name := range []string{events.SignerHeader, events.SignatureHeader} {
		copied.Header[name] = raw.Header[name]
	}
	ack, err := h.env.JS.PublishMsg(ctx, copied)
	if err != nil {
		t.Fatal(err)
	}
	h.caughtUp()
	return ack.Sequence
}

// TestAttackReplayedRotationRevivesARotatedAwaySecret: a key is rotated
// (value 1), then rotated again without grace because value 1 leaked. The
// insider republishes the genuine, signed KeyRotated that issued value 1.
// Its signature verifies (it binds neither the sequence nor the key's
// chain), and the projections apply a rotation whose prev_hash is not the
// key's last event: value 1 is VALID again, and the owner's current value
// is pushed out to EXPIRED.
func TestAttackReplayedRotationRevivesARotatedAwaySecret(t *testing.T) {
	h := start(t)
	admin := h.bootstrap("acme")
	k := h.create("acme", admin, map[string]any{"name": "billing", "scopes": []string{"invoices:read"}})
	leaked := h.rotate("acme", k.Key.ID, admin, nil)
	current := h.rotate("acme", k.Key.ID, admin, nil) // value 1 leaked: rotated away at once
	if v := h.verify(leaked.Secret); v.Code != "EXPIRED" {
		t.Fatalf("the leaked value answers %s before the attack, want EXPIRED", v.Code)
	}

	republish(t, h, leaked.Key.Version)

	if v := h.verify(leaked.Secret); v.Valid {
		t.Errorf("the rotated-away (leaked) value answers %s after a copy of its KeyRotated was republished: it is alive again", v.Code)
	}
	if v := h.verify(current.Secret); !v.Valid {
		t.Errorf("the key's current value answers %s after the replay, want VALID: its owner is locked out", v.Code)
	}
}

// TestAttackReplayedCreationMakesAKeyUnrevocable: the insider republishes
// the genuine, signed KeyCreated of a key (say, a stolen one). The
// projections refuse to create it twice but count it as keyledger's; the
// command path then rebuilds the key from its history, which now holds two
// creations, and fails: the key can no longer be revoked nor rotated, and
// keeps verifying VALID.
func TestAttackReplayedCreationMakesAKeyUnrevocable(t *testing.T) {
	h := start(t)
	admin := h.bootstrap("acme")
	stolen := h.create("acme", admin, map[string]any{"name": "ci deploy", "scopes": []string{"invoices:read"}})

	republish(t, h, stolen.Key.Version)

	res := h.request("DELETE", "/v1/orgs/acme/keys/"+stolen.Key.ID, admin, map[string]string{"reason": "stolen"})
	if res.StatusCode != http.StatusNoContent {
		t.Errorf("revoking the key after a copy of its KeyCreated was republished: %d %s, want 204", res.StatusCode, res.body)
	}
	if v := h.verify(stolen.Secret); v.Code != "REVOKED" {
		t.Errorf("the stolen key answers %s after its revocation was asked, want REVOKED", v.Code)
	}
	res = h.request("POST", "/v1/orgs/acme/keys/"+stolen.Key.ID+"/rotate", admin, nil)
	if res.StatusCode != http.StatusOK && res.StatusCode != http.StatusConflict && res.StatusCode != 410 {
		t.Errorf("rotating the key after the replay: %d %s", res.StatusCode, res.body)
	}
}

// TestAttackExpiringKeyOutlivesItsExpiry: a management key made to last
// an hour (a contractor's, an incident's) may give a new key only scopes
// it holds, but any lifetime: it mints a keys:manage key that never
// expires, or rotates a peer management key that never expires and
// receives its new value. When the hour is up, the holder still manages
// the org's keys.
func TestAttackExpiringKeyOutlivesItsExpiry(t *testing.T) {
	h := start(t)
	admin := h.bootstrap("acme")
	hour := time.Now().Add(time.Hour).UTC().Format(time.RFC3339)
	temp := h.create("acme", admin, map[string]any{"name": "contractor, one hour", "scopes": []string{"keys:manage"}, "expires_at": hour})
	peer := h.create("acme", admin, map[string]any{"name": "ops", "scopes": []string{"keys:manage"}})

	var minted struct {
		Key struct {
			ExpiresAt *string `json:"expires_at"`
		}
	}
	res := h.request("POST", "/v1/orgs/acme/keys", temp.Secret, map[string]any{"name": "backdoor", "scopes": []string{"keys:manage"}})
	if res.StatusCode == http.StatusCreated {
		res.json(t, &minted)
		if minted.Key.ExpiresAt == nil || *minted.Key.ExpiresAt > hour {
			t.Errorf("a key expiring at %s minted a keys:manage key expiring at %v", hour, deref(minted.Key.ExpiresAt))
		}
	}
	res = h.request("POST", "/v1/orgs/acme/keys/"+peer.Key.ID+"/rotate", temp.Secret, nil)
	if res.StatusCode == http.StatusOK {
		t.Errorf("a key expiring at %s rotated a never-expiring keys:manage key and holds its new value", hour)
	}
}

func deref(s *string) string {
	if s == nil {
		return "never"
	}
	return *s
}

// TestAttackPausedFeedKeepsARevokedKeyValid: the insider pauses (JetStream
// consumer pause, an hour) the ordered consumer an instance follows the
// stream with; its NATS connection stays up. A revocation made on another
// instance never reaches it: the revoked key keeps answering VALID there,
// /readyz stays 200, and --max-staleness, which watches only the NATS
// connection, never fails it closed (the verifier package, which compares
// what it applied with the stream's last sequence, would).
func TestAttackPausedFeedKeepsARevokedKeyValid(t *testing.T) {
	env := natstest.Start(t)
	a := instance(t, env, func(s *khttp.Server) {
		s.MaxStaleness = time.Second
		s.Unreachable = func() time.Time { return time.Time{} } // the connection is up
	})
	b := instance(t, env, nil)
	admin := a.bootstrap("acme")
	k := a.create("acme", admin, map[string]any{"name": "stolen"})
	b.caughtUp()
	ctx := context.Background()
	stream, err := env.JS.Stream(ctx, events.StreamName)
	if err != nil {
		t.Fatal(err)
	}
	names := stream.ConsumerNames(ctx)
	for name := range names.Name() {
		if _, err := env.JS.PauseConsumer(ctx, events.StreamName, name, time.Now().Add(time.Hour)); err != nil {
			t.Fatal(err)
		}
	}
	b.must(http.StatusNoContent, "DELETE", "/v1/orgs/acme/keys/"+k.Key.ID, admin, map[string]string{"reason": "stolen"})

	deadline := time.Now().Add(10 * time.Second)
	for {
		res := a.request("POST", "/v1/verify", "", map[string]string{"key": k.Secret})
		var v verifyView
		res.json(t, &v)
		if res.StatusCode == http.StatusServiceUnavailable || v.Code == "REVOKED" {
			return
		}
		if time.Now().After(deadline) {
			ready := a.request("GET", "/readyz", "", nil)
			t.Fatalf("10 s after its revocation on another instance, the key still answers %d %s on this one (max staleness 1s; /readyz %d)", res.StatusCode, v.Code, ready.StatusCode)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestAttackWriteLimitMultipliesThroughMintedKeys: the write limit is kept
// per actor, and a management key mints actors. A stolen management key
// spends its budget on new keys holding keys:manage, each of which has a
// budget of its own: within one window the budget grows geometrically
// (here 3, then 3 × 3, ...), up to the keys-per-org cap, and every one of
// those keys may rotate itself at the full rate, with no cap at all. The
// README's "one stolen management key cannot grow the stream by more than
// 86,400 events a day" does not hold.
func TestAttackWriteLimitMultipliesThroughMintedKeys(t *testing.T) {
	h := startWith(t, t.TempDir(), func(s *khttp.Server) {
		s.WriteLimit = khttp.Limit{Per: 3, Every: time.Hour}
	})
	stolen := h.bootstrap("acme")
	written := 0
	var children []issued
	for {
		res := h.request("POST", "/v1/orgs/acme/keys", stolen, map[string]any{"name": "child", "scopes": []string{"keys:manage"}})
		if res.StatusCode != http.StatusCreated {
			break
		}
		var c issued
		res.json(t, &c)
		children = append(children, c)
		written++
	}
	for _, c := range children {
		for {
			res := h.request("POST", "/v1/orgs/acme/keys/"+c.Key.ID+"/rotate", c.Secret, map[string]any{"grace_period_seconds": 3600})
			if res.StatusCode != http.StatusOK {
				break
			}
			written++
		}
	}
	if written > 3 {
		t.Errorf("one stolen management key, with a write limit of 3 an hour, appended %d creates and rotations within the hour", written)
	}
}

// TestAttackAuditHeadScansJunkForAnyone: GET /v1/audit/head needs no
// credential. When the checkpoint subject ends with junk, the head is
// looked for by scanning every message after the newest signed checkpoint
// the instance knows — on every request, since junk never becomes the
// known head, and under the checkpointer's lock. With the insider's junk
// in place (and, on a quiet system, no new checkpoint to end it), every
// anonymous request makes the server deliver all of it again.
func TestAttackAuditHeadScansJunkForAnyone(t *testing.T) {
	h := start(t)
	admin := h.bootstrap("acme")
	h.create("acme", admin, map[string]any{"name": "k"})
	ctx := context.Background()
	cp := &events.Checkpointer{Store: h.env.Store}
	if wrote, _, err := cp.Once(ctx); err != nil || !wrote {
		t.Fatalf("checkpoint: %v %v", wrote, err)
	}
	const junk = 5000
	for range junk {
		h.env.JS.PublishAsync(events.CheckpointSubject, []byte("junk"))
	}
	select {
	case <-h.env.JS.PublishAsyncComplete():
	case <-time.After(30 * time.Second):
		t.Fatal("junk not acknowledged")
	}
	h.must(http.StatusOK, "GET", "/v1/audit/head", "", nil) // the instance learns the head
	outMsgs := func() int64 {
		v, err := h.env.Embedded.Server.Varz(nil)
		if err != nil {
			t.Fatal(err)
		}
		return v.OutMsgs
	}
	// The instance's own readers (its projection feed, the webhook
	// deliverer) pass over the junk too, once; on a busy machine they may
	// still be at it: measure once the server has gone quiet.
	out := outMsgs()
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); {
		time.Sleep(300 * time.Millisecond)
		now := outMsgs()
		if now == out {
			break
		}
		out = now
	}
	const requests = 5
	for range requests {
		h.must(http.StatusOK, "GET", "/v1/audit/head", "", nil)
	}
	if per := (outMsgs() - out) / requests; per > junk/10 {
		t.Errorf("each anonymous GET /v1/audit/head made the server deliver %d messages (%d junk messages on the checkpoint subject)", per, junk)
	}
}

// TestAttackStolenKeyBricksTheOrgForGood: revoked keys counted against the
// keys-per-org cap, and no key is ever removed. A stolen management key
// (with the keys it mints) fills the org up to the cap; revoking every one
// of them gave nothing back: the org could never create a key again, not
// even by a manager. (The write limit, which the lineage of minted keys
// now shares, is not what this is about: off.)
func TestAttackStolenKeyBricksTheOrgForGood(t *testing.T) {
	h := startWith(t, t.TempDir(), func(s *khttp.Server) {
		s.WriteLimit = khttp.Limit{}
		s.Keys.MaxPerOrg = 10
	})
	admin := h.bootstrap("acme")
	stolen := h.create("acme", admin, map[string]any{"name": "stolen", "scopes": []string{"keys:manage"}})
	minted := []issued{stolen}
	for i := 0; i < len(minted); i++ {
		for {
			res := h.request("POST", "/v1/orgs/acme/keys", minted[i].Secret, map[string]any{"name": "filler", "scopes": []string{"keys:manage"}})
			if res.StatusCode != http.StatusCreated {
				break
			}
			var c issued
			res.json(t, &c)
			minted = append(minted, c)
		}
	}
	for _, k := range minted {
		h.request("DELETE", "/v1/orgs/acme/keys/"+k.Key.ID, admin, nil)
	}
	res := h.request("POST", "/v1/orgs/acme/keys", admin, map[string]any{"name": "after the incident"})
	if res.StatusCode != http.StatusCreated {
		t.Errorf("after one stolen key minted %d keys and all were revoked, the org's admin cannot create a key: %d %s", len(minted)-1, res.StatusCode, res.body)
	}
}
