package http

import (
	"bytes"
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/keyledger/keyledger/domain"
	"github.com/keyledger/keyledger/events"
	"github.com/keyledger/keyledger/internal/natstest"
)

// TestSharedClaims plays two instances' requests against one real bucket:
// the second sees the first running, until its claim is a lease old and
// taken over; then the first can no longer keep its answer there.
func TestSharedClaims(t *testing.T) {
	env := natstest.Start(t)
	ctx := context.Background()
	store, err := events.OpenIdempotency(ctx, env.JS, 1)
	if err != nil {
		t.Fatal(err)
	}
	alice := domain.Actor{Kind: domain.ActorKey, ID: "key_A"}
	name := entryName(alice, "POST", "/v1/orgs/acme/keys", "k")
	req := func(cred, sum string) *shared { return &shared{store: store, name: name, credential: cred, sum: sum} }
	now := time.Now()
	wantRefused := func(err, want error) {
		t.Helper()
		if err != want {
			t.Fatalf("claim: %v, want %v", err, want)
		}
	}

	first := req("c8k_first", "aa")
	rev, kept, err := first.claim(ctx, now)
	if err != nil || kept != nil || rev == 0 {
		t.Fatalf("the first claim: %d %v %v", rev, kept, err)
	}
	_, _, err = req("c8k_first", "aa").claim(ctx, now.Add(claimLease-time.Second))
	wantRefused(err, errIdemRunning)
	_, _, err = req("c8k_first", "bb").claim(ctx, now)
	wantRefused(err, errIdemOtherRequest)

	// A lease later, the claim was left by an instance that died.
	second := req("c8k_first", "aa")
	rev2, kept, err := second.claim(ctx, now.Add(claimLease+time.Second))
	if err != nil || kept != nil || rev2 == 0 {
		t.Fatalf("taking over a claim a lease old: %d %v %v", rev2, kept, err)
	}
	if err := first.finish(ctx, rev, answer{status: 201, body: []byte("late")}); err == nil {
		t.Error("the first request kept its answer over the claim taken from it")
	}
	a := answer{status: http.StatusCreated, header: http.Header{"Location": {"/v1/orgs/acme/keys/key_B"}, "X-Request-Id": {"r1"}}, body: []byte(`{"secret":"c8k_s"}`)}
	if err := second.finish(ctx, rev2, a); err != nil {
		t.Fatal(err)
	}
	raw, _, _ := store.Get(ctx, name)
	if bytes.Contains(raw, []byte("c8k_s")) || bytes.Contains(raw, []byte("r1")) || !bytes.Contains(raw, []byte("key_B")) {
		t.Errorf("the entry holds the body or a header not worth replaying, or lacks Location: %s", raw)
	}

	_, kept, err = req("c8k_first", "aa").claim(ctx, now.Add(time.Hour))
	if err != nil || kept == nil || string(kept.body) != `{"secret":"c8k_s"}` || kept.status != 201 || kept.header.Get("Location") == "" {
		t.Fatalf("a retry with the credential: %+v %v", kept, err)
	}
	_, _, err = req("c8k_other", "aa").claim(ctx, now.Add(time.Hour))
	wantRefused(err, errIdemOtherCredential)

	// A failed answer releases the claim.
	other := &shared{store: store, name: entryName(alice, "POST", "/v1/orgs/acme/keys", "k2"), credential: "c8k_first", sum: "aa"}
	rev, _, err = other.claim(ctx, now)
	if err != nil {
		t.Fatal(err)
	}
	if err := other.finish(ctx, rev, answer{status: http.StatusBadRequest}); err != nil {
		t.Fatal(err)
	}
	rev, kept, err = (&shared{store: store, name: other.name, credential: "c8k_first", sum: "cc"}).claim(ctx, now)
	if err != nil || kept != nil || rev == 0 {
		t.Errorf("a claim after a failed answer: %d %v %v", rev, kept, err)
	}
}

// TestEntryNamesRevealNothingAndDiffer: every part of the name matters,
// and none shows in it.
func TestEntryNamesRevealNothingAndDiffer(t *testing.T) {
	a := domain.Actor{Kind: domain.ActorKey, ID: "key_A"}
	names := map[string]bool{}
	for _, n := range []string{
		entryName(a, "POST", "/v1/orgs/acme/keys", "k"),
		entryName(domain.Actor{Kind: domain.ActorUser, ID: "key_A"}, "POST", "/v1/orgs/acme/keys", "k"),
		entryName(domain.Actor{Kind: domain.ActorKey, ID: "key_B"}, "POST", "/v1/orgs/acme/keys", "k"),
		entryName(a, "DELETE", "/v1/orgs/acme/keys", "k"),
		entryName(a, "POST", "/v1/orgs/globex/keys", "k"),
		entryName(a, "POST", "/v1/orgs/acme/keys", "k2"),
		entryName(domain.Actor{Kind: domain.ActorKey, ID: "key_A POST"}, "/v1/orgs/acme/keys", "k", ""),
	} {
		if names[n] || len(n) != 64 || bytes.Contains([]byte(n), []byte("acme")) {
			t.Errorf("entry name %s: repeated, or not a SHA-256", n)
		}
		names[n] = true
	}
}
