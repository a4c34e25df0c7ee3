// Package apitest runs a whole keyledger instance — projections following
// the stream and the HTTP API on a real server — on a natstest environment,
// for tests of packages that sit beside the service.
package apitest

import (
	"context"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/keyledger/keyledger/domain"
	khttp "github.com/keyledger/keyledger/http"
	"github.com/keyledger/keyledger/internal/natstest"
	"github.com/keyledger/keyledger/projections"
)

// API is a running instance.
type API struct {
	URL    string
	Keys   *domain.Keys
	Runner *projections.Runner
}

// Start runs an instance on env until the test ends.
func Start(t testing.TB, env *natstest.Env) *API {
	t.Helper()
	listing, index := projections.NewListing(), projections.NewVerifyIndex()
	runner := projections.NewRunner(env.Store, natstest.Quiet(), listing, index)
	env.Store.UseCache(listing)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = runner.Run(ctx) }()
	keys := &domain.Keys{Store: env.Store}
	api := &khttp.Server{Keys: keys, Listing: listing, Index: index, Log: env.Store, Runner: runner, Logger: natstest.Quiet()}
	srv := httptest.NewServer(api.Handler())
	t.Cleanup(func() { srv.Close(); cancel(); <-done })
	return &API{URL: srv.URL, Keys: keys, Runner: runner}
}

// Bootstrap mints a management key of org holding scopes besides
// keys:manage, and waits until the instance knows it.
func (a *API) Bootstrap(t testing.TB, org string, scopes ...string) string {
	t.Helper()
	issued, err := a.Keys.Create(context.Background(), domain.CreateKey{
		OrgID: org, Name: "admin of " + org, Scopes: append([]string{domain.ScopeManage}, scopes...),
		Actor: domain.Actor{Kind: domain.ActorSystem, ID: "bootstrap", Name: "keyledger bootstrap"},
	})
	if err != nil {
		t.Fatalf("bootstrap %s: %v", org, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := a.Runner.WaitFor(ctx, issued.Key.Version); err != nil {
		t.Fatal(err)
	}
	return issued.Secret
}
