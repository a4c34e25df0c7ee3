// Package apitest runs a whole keyledger instance — projections following
// the stream and the HTTP API on a real server — on a natstest environment,
// for the tests of the API and of the packages beside the service.
package apitest

import (
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"testing"
	"time"

	"github.com/keyledger/keyledger/domain"
	"github.com/keyledger/keyledger/events"
	khttp "github.com/keyledger/keyledger/http"
	"github.com/keyledger/keyledger/internal/natstest"
	"github.com/keyledger/keyledger/projections"
	"github.com/keyledger/keyledger/webhooks"
)

// Options are optional.
type Options struct {
	Logger *slog.Logger // quiet when nil
	// Configure changes the API before it starts serving.
	Configure func(*khttp.Server)
	// Wrap, when set, wraps the API's handler on the HTTP server: a test
	// stands in for the network there, e.g. to give requests the peer
	// addresses of many clients, which loopback alone cannot.
	Wrap func(http.Handler) http.Handler
	// BeforeApply, when set, is called with each event the projections'
	// feed delivers, before they apply it: a test that blocks there makes
	// the instance fall behind the stream, as a slow or partitioned
	// instance does. The instance's own appends are still offered at once.
	BeforeApply func(domain.Event)
	// Webhooks, when set, changes the webhook deliverer's options before
	// it starts (it allows http and private addresses, for receivers on
	// loopback, and shares env's secrets key between instances).
	Webhooks func(*webhooks.Options)
}

// feedHook is the store as the projections follow it, with a call before
// each event is handed on.
type feedHook struct {
	projections.Source
	before func(domain.Event)
}

func (f feedHook) Follow(ctx context.Context, from uint64, fn func(domain.Event) error) error {
	return f.Source.Follow(ctx, from, func(e domain.Event) error {
		f.before(e)
		return fn(e)
	})
}

// API is a running instance.
type API struct {
	URL    string
	HTTP   *httptest.Server
	Server *khttp.Server
	Keys   *domain.Keys
	Runner *projections.Runner
	Store  *events.Store
	// Webhooks delivers the instance's webhook endpoints.
	Webhooks *webhooks.Deliverer
	// Stop stops serving and following; calling it again does nothing.
	Stop func()
}

// Start runs an instance on env until the test ends, wired as serve does.
func Start(t testing.TB, env *natstest.Env, opts ...Options) *API {
	t.Helper()
	var o Options
	if len(opts) > 0 {
		o = opts[0]
	}
	if o.Logger == nil {
		o.Logger = natstest.Quiet()
	}
	// A store of its own, as a process of its own would have: its cache
	// and what it appends belong to this instance only.
	store, err := events.Attach(context.Background(), env.JS, env.Config(o.Logger))
	if err != nil {
		t.Fatal(err)
	}
	idem, err := events.OpenIdempotency(context.Background(), env.JS, 1)
	if err != nil {
		t.Fatal(err)
	}
	table := projections.NewTable()
	listing, index := table.Listing(), table.Index()
	var src projections.Source = store
	if o.BeforeApply != nil {
		src = feedHook{store, o.BeforeApply}
	}
	reg := webhooks.NewRegistry()
	if err := reg.Prime(context.Background(), store.EachWebhookEvent); err != nil {
		t.Fatal(err)
	}
	runner := projections.NewRunner(src, o.Logger, table, reg)
	store.UseCache(listing)
	store.UseVerdicts(table)
	store.WaitVerdicts(runner.WaitFor)
	store.OnAppended(runner.Offer)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = runner.Run(ctx) }()
	del := startWebhooks(t, ctx, env, store, reg, o)
	go del.Run(ctx)
	a := &API{Keys: &domain.Keys{Store: store, MaxExpiry: 365 * 24 * time.Hour, Counter: listing}, Runner: runner, Store: store, Webhooks: del}
	a.Server = &khttp.Server{Keys: a.Keys, Listing: listing, Index: index, Log: store, Runner: runner, Idempotency: idem, Logger: o.Logger, WaitTimeout: time.Second,
		Trust: store, Checkpoints: &events.Checkpointer{Store: store, Logger: o.Logger}, Webhooks: del}
	if o.Configure != nil {
		o.Configure(a.Server)
	}
	handler := a.Server.Handler()
	if o.Wrap != nil {
		handler = o.Wrap(handler)
	}
	a.HTTP = httptest.NewServer(handler)
	a.URL = a.HTTP.URL
	a.Stop = func() { a.HTTP.Close(); cancel(); <-done }
	t.Cleanup(a.Stop)
	deadline := time.Now().Add(10 * time.Second)
	for !runner.Ready() {
		if time.Now().After(deadline) {
			t.Fatal("projections did not catch up within 10s")
		}
		time.Sleep(5 * time.Millisecond)
	}
	return a
}

func startWebhooks(t testing.TB, ctx context.Context, env *natstest.Env, store *events.Store, reg *webhooks.Registry, o Options) *webhooks.Deliverer {
	t.Helper()
	key, err := webhooks.LoadKey(filepath.Join(env.Dir, "webhook-secrets.key"), true)
	if err != nil {
		t.Fatal(err)
	}
	vault, err := webhooks.OpenVault(ctx, env.JS, key, 1)
	if err != nil {
		t.Fatal(err)
	}
	wo := webhooks.Options{JS: env.JS, Store: store, Vault: vault, Registry: reg, AllowHTTP: true, AllowPrivate: true, Instance: "apitest", Log: o.Logger}
	if o.Webhooks != nil {
		o.Webhooks(&wo)
	}
	del, err := webhooks.New(ctx, wo)
	if err != nil {
		t.Fatal(err)
	}
	return del
}

// Bootstrap mints a management key of org holding scopes besides
// keys:manage, the way `keyledger bootstrap` does, and waits until the
// instance knows it.
func (a *API) Bootstrap(t testing.TB, org string, scopes ...string) string {
	t.Helper()
	issued, err := a.Keys.Create(context.Background(), domain.CreateKey{
		OrgID: org, Name: "admin of " + org, Scopes: append([]string{domain.ScopeManage}, scopes...),
		By: domain.SystemPrincipal("bootstrap", "keyledger bootstrap"),
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
