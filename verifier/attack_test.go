package verifier_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/keyledger/keyledger/internal/apitest"
	"github.com/keyledger/keyledger/internal/natstest"
	"github.com/keyledger/keyledger/verifier"
)

// startVerifier builds a service's verifier on url without waiting for it
// to be ready.
func startVerifier(t *testing.T, env *natstest.Env, url string, opts verifier.Options) *verifier.Verifier {
	t.Helper()
	nk, err := nats.NkeyOptionFromSeed(env.Embedded.Credentials.Subscriber)
	if err != nil {
		t.Fatal(err)
	}
	nc, err := nats.Connect(url, nk, nats.MaxReconnects(-1), nats.ReconnectWait(20*time.Millisecond), nats.CustomInboxPrefix(verifier.SubscriberInbox),
		nats.ErrorHandler(func(*nats.Conn, *nats.Subscription, error) {}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	opts.Logger = natstest.Quiet()
	if opts.Signers == nil {
		opts.Signers = env.Signers
	}
	v, err := verifier.New(ctx, js, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(v.Close)
	return v
}

// eventually polls cond for up to 10 s.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within 10s: %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestAttackVerifierFailsClosedUntilReady replays item 2 of the attack on
// the verifier package: a verifier that has not replayed the stream yet
// (here: its connection cut right after it attached) must not judge keys
// from a partial index; Verify answers UNAVAILABLE and the middleware 503.
func TestAttackVerifierFailsClosedUntilReady(t *testing.T) {
	env := natstest.StartListening(t)
	api := apitest.Start(t, env)
	admin := api.Bootstrap(t, "acme", "orders:read")
	_, secret := createKey(t, api, admin, "checkout")
	p := newProxy(t, strings.TrimPrefix(env.Embedded.ClientURL(), "nats://"))
	v := startVerifier(t, env, p.url(), verifier.Options{})
	p.cut()
	if v.Ready() {
		t.Skip("the verifier caught up before its connection was cut")
	}
	if got := v.Verify(secret); got.Valid() || got.Code != verifier.Unavailable {
		t.Errorf("before ready: Verify = %s, want %s", got.Code, verifier.Unavailable)
	}
	srv := httptest.NewServer(v.Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {})))
	defer srv.Close()
	req, _ := http.NewRequest("GET", srv.URL, nil)
	req.Header.Set("X-API-Key", secret)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusServiceUnavailable || res.Header.Get("Retry-After") == "" {
		t.Errorf("middleware before ready: %d (Retry-After %q), want 503 with Retry-After", res.StatusCode, res.Header.Get("Retry-After"))
	}
	p.restore()
	eventually(t, "ready once the connection is back", v.Ready)
	if got := v.Verify(secret); !got.Valid() {
		t.Errorf("once ready: Verify = %s, want VALID", got.Code)
	}
}

// TestAttackVerifierMaxStalenessFailsClosed cuts a ready verifier's feed:
// with MaxStaleness set it stops vouching for keys once the feed has been
// cut for longer than that, and vouches again once it is back; without it,
// it keeps answering from memory (the trade-off the README explains).
func TestAttackVerifierMaxStalenessFailsClosed(t *testing.T) {
	env := natstest.StartListening(t)
	api := apitest.Start(t, env)
	admin := api.Bootstrap(t, "acme", "orders:read")
	_, secret := createKey(t, api, admin, "checkout")
	p := newProxy(t, strings.TrimPrefix(env.Embedded.ClientURL(), "nats://"))
	strict := startVerifier(t, env, p.url(), verifier.Options{MaxStaleness: 300 * time.Millisecond})
	lenient := startVerifier(t, env, p.url(), verifier.Options{})
	eventually(t, "both ready", func() bool { return strict.Ready() && lenient.Ready() })
	eventually(t, "the strict verifier vouches before the cut", func() bool { return strict.Verify(secret).Valid() })
	p.cut()
	eventually(t, "the strict verifier fails closed", func() bool { return strict.Verify(secret).Code == verifier.Unavailable })
	if got := lenient.Verify(secret); !got.Valid() {
		t.Errorf("a verifier without MaxStaleness while cut off: %s, want VALID from memory", got.Code)
	}
	p.restore()
	eventually(t, "the strict verifier vouches again", func() bool { return strict.Verify(secret).Valid() })
}
