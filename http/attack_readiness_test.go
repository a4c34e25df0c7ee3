package http_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/keyledger/keyledger/domain"
	"github.com/keyledger/keyledger/events"
	khttp "github.com/keyledger/keyledger/http"
	"github.com/keyledger/keyledger/internal/natstest"
	"github.com/keyledger/keyledger/projections"
)

// heldSource is the real event store, whose feed holds back every event
// from a sequence on until released: an instance still replaying the
// stream after a restart, caught at the worst moment.
type heldSource struct {
	*events.Store
	from    uint64
	release chan struct{}
}

func (h *heldSource) Follow(ctx context.Context, from uint64, fn func(domain.Event) error) error {
	return h.Store.Follow(ctx, from, func(e domain.Event) error {
		if e.Seq >= h.from {
			select {
			case <-h.release:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		return fn(e)
	})
}

// TestAttackCatchingUpFailsClosed replays item 2 of the attack: an
// instance that has not replayed the stream yet must not answer VALID for
// a key whose revocation is still in the tail it has not applied, nor let
// that key manage keys. Until ready it answers 503 unavailable with
// Retry-After on every route that needs the projections.
func TestAttackCatchingUpFailsClosed(t *testing.T) {
	env := natstest.Start(t)
	keys := &domain.Keys{Store: env.Store}
	ctx := context.Background()
	admin, err := keys.Create(ctx, domain.CreateKey{OrgID: "acme", Name: "admin", Scopes: []string{domain.ScopeManage}, By: domain.SystemPrincipal("bootstrap", "keyledger bootstrap")})
	if err != nil {
		t.Fatal(err)
	}
	revoked, err := keys.Revoke(ctx, "acme", admin.Key.ID, domain.RevokeKey{Reason: "leaked", By: domain.SystemPrincipal("test", "test")})
	if err != nil {
		t.Fatal(err)
	}

	// A restarting instance: it has applied the creation, not yet the
	// revocation.
	src := &heldSource{Store: env.Store, from: revoked.Version, release: make(chan struct{})}
	table := projections.NewTable()
	runner := projections.NewRunner(src, natstest.Quiet(), table)
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() { _ = runner.Run(rctx) }()
	api := &khttp.Server{Keys: &domain.Keys{Store: env.Store}, Listing: table.Listing(), Index: table.Index(), Log: env.Store, Runner: runner, Logger: natstest.Quiet()}
	srv := httptest.NewServer(api.Handler())
	defer srv.Close()
	h := &harness{t: t, env: env, srv: srv}
	deadline := time.Now().Add(10 * time.Second)
	for runner.Applied() < admin.Key.Version && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}

	for _, c := range []struct {
		name, method, path, token string
		body                      any
	}{
		{"Verify", "POST", "/v1/verify", "", map[string]string{"key": admin.Secret}},
		{"Whoami", "GET", "/v1/whoami", admin.Secret, nil},
		{"ListKeys", "GET", "/v1/orgs/acme/keys", admin.Secret, nil},
		{"CreateKey", "POST", "/v1/orgs/acme/keys", admin.Secret, map[string]any{"name": "minted while catching up"}},
		{"OrgEventStream", "GET", "/v1/orgs/acme/events/stream", admin.Secret, nil},
		{"KeyEventStream", "GET", "/v1/events/stream", admin.Secret, nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			// An event stream that wrongly opens would never end: a bounded wait.
			rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			defer cancel()
			res, err := srv.Client().Do(newRequest(t, rctx, c.method, srv.URL+c.path, c.token, c.body))
			if err != nil {
				t.Fatal(err)
			}
			defer res.Body.Close()
			if res.StatusCode != http.StatusServiceUnavailable || res.Header.Get("Retry-After") == "" {
				t.Errorf("%s %s while catching up: %d (Retry-After %q), want 503 unavailable with Retry-After",
					c.method, c.path, res.StatusCode, res.Header.Get("Retry-After"))
			}
		})
	}
	if got := env.LastSeq(t); got != revoked.Version {
		t.Errorf("the stream moved to %d while the instance was catching up, want %d", got, revoked.Version)
	}
	h.must(http.StatusServiceUnavailable, "GET", "/readyz", "", nil)
	h.must(http.StatusOK, "GET", "/healthz", "", nil)

	close(src.release)
	for !runner.Ready() && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if v := h.verify(admin.Secret); v.Code != "REVOKED" {
		t.Errorf("once ready: %s, want REVOKED", v.Code)
	}
	h.must(http.StatusUnauthorized, "GET", "/v1/orgs/acme/keys", admin.Secret, nil)
}
