package verifier_test

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/keyledger/keyledger/domain"
	"github.com/keyledger/keyledger/internal/apitest"
	"github.com/keyledger/keyledger/internal/natstest"
	"github.com/keyledger/keyledger/verifier"
)

// service is a separate service: its own NATS connection, with the
// read-only subscriber credential, and a verifier built on it.
func service(t testing.TB, env *natstest.Env, url string, opts verifier.Options) (*verifier.Verifier, *nats.Conn) {
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
	if err := v.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	return v, nc
}

// call sends a manager request and returns the status and the answer.
func call(t testing.TB, method, url, token string, body string) (int, map[string]any) {
	t.Helper()
	req, _ := http.NewRequest(method, url, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+token)
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	var out map[string]any
	raw, _ := io.ReadAll(res.Body)
	_ = json.Unmarshal(raw, &out)
	return res.StatusCode, out
}

func createKey(t *testing.T, api *apitest.API, admin, name string) (id, secret string) {
	t.Helper()
	status, out := call(t, "POST", api.URL+"/v1/orgs/acme/keys", admin, `{"name":"`+name+`","scopes":["orders:read"]}`)
	if status != http.StatusCreated {
		t.Fatalf("create: %d %v", status, out)
	}
	return out["key"].(map[string]any)["id"].(string), out["secret"].(string)
}

func TestServiceRefusesAKeyRevokedOverHTTP(t *testing.T) {
	env := natstest.StartListening(t)
	api := apitest.Start(t, env)
	admin := api.Bootstrap(t, "acme", "orders:read")
	id, secret := createKey(t, api, admin, "checkout")

	revoked := make(chan verifier.Event, 1)
	v, _ := service(t, env, env.Embedded.ClientURL(), verifier.Options{OnRevoked: func(e verifier.Event) { revoked <- e }})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if got := v.Verify(secret); !got.Valid() || got.Key.ID != id || got.Key.Scopes[0] != "orders:read" {
		t.Fatalf("before revocation: %+v", got)
	}
	req, _ := http.NewRequest("DELETE", api.URL+"/v1/orgs/acme/keys/"+id, nil)
	req.Header.Set("Authorization", "Bearer "+admin)
	res, err := http.DefaultClient.Do(req)
	if err != nil || res.StatusCode != http.StatusNoContent {
		t.Fatalf("revoke: %v %v", res, err)
	}
	select {
	case e := <-revoked:
		if e.KeyID != id {
			t.Errorf("OnRevoked for %s, want %s", e.KeyID, id)
		}
	case <-ctx.Done():
		t.Fatal("the service was never told of the revocation")
	}
	if got := v.Verify(secret); got.Valid() || got.Code != domain.VerifyRevoked {
		t.Errorf("after revocation the service's verifier says %s, want REVOKED", got.Code)
	}
}

// proxy forwards TCP to the NATS port and can cut every connection.
type proxy struct {
	ln     net.Listener
	target string
	mu     sync.Mutex
	down   bool
	conns  []net.Conn
}

func newProxy(t *testing.T, target string) *proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{ln: ln, target: target}
	t.Cleanup(func() { ln.Close(); p.cut() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			p.mu.Lock()
			down := p.down
			p.mu.Unlock()
			up, err := net.Dial("tcp", target)
			if down || err != nil {
				c.Close()
				continue
			}
			p.mu.Lock()
			p.conns = append(p.conns, c, up)
			p.mu.Unlock()
			go func() { _, _ = io.Copy(up, c); up.Close() }()
			go func() { _, _ = io.Copy(c, up); c.Close() }()
		}
	}()
	return p
}

func (p *proxy) url() string { return "nats://" + p.ln.Addr().String() }

func (p *proxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.down = true
	for _, c := range p.conns {
		c.Close()
	}
	p.conns = nil
}

func (p *proxy) restore() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.down = false
}

// TestResumesAfterAnOutageMissingNothing cuts the service's connection while
// 100 keys are revoked: after it reconnects all 100 are refused, and the
// callback saw each revocation exactly once.
func TestResumesAfterAnOutageMissingNothing(t *testing.T) {
	env := natstest.StartListening(t)
	api := apitest.Start(t, env)
	admin := api.Bootstrap(t, "acme", "orders:read")
	ids, secrets := make([]string, 100), make([]string, 100)
	for i := range ids {
		ids[i], secrets[i] = createKey(t, api, admin, "k")
	}
	var mu sync.Mutex
	seen := map[string]int{}
	p := newProxy(t, strings.TrimPrefix(env.Embedded.ClientURL(), "nats://"))
	v, nc := service(t, env, p.url(), verifier.Options{OnRevoked: func(e verifier.Event) {
		mu.Lock()
		seen[e.KeyID]++
		mu.Unlock()
	}})

	p.cut()
	deadline := time.Now().Add(10 * time.Second)
	for nc.Status() == nats.CONNECTED {
		if time.Now().After(deadline) {
			t.Fatal("the service's connection did not drop")
		}
		time.Sleep(5 * time.Millisecond)
	}
	var last uint64
	for _, id := range ids {
		status, out := call(t, "DELETE", api.URL+"/v1/orgs/acme/keys/"+id, admin, "")
		if status != http.StatusNoContent {
			t.Fatalf("revoke %s: %d %v", id, status, out)
		}
	}
	last, _ = env.Store.LastSeq(context.Background())
	if got := v.Verify(secrets[0]); !got.Valid() {
		t.Logf("during the outage the verifier already refused a key: %s", got.Code)
	}
	p.restore()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := v.WaitFor(ctx, last); err != nil {
		t.Fatalf("the verifier did not catch up after reconnecting: %v", err)
	}
	for i, s := range secrets {
		if got := v.Verify(s); got.Code != domain.VerifyRevoked {
			t.Errorf("key %d after the outage: %s, want REVOKED", i, got.Code)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	for _, id := range ids {
		if seen[id] != 1 {
			t.Errorf("OnRevoked saw %s %d times, want exactly once", id, seen[id])
		}
	}
	if behind, err := v.Behind(ctx); err != nil || behind != 0 {
		t.Errorf("Behind = %d, %v; want 0", behind, err)
	}
}

func TestMiddleware(t *testing.T) {
	env := natstest.StartListening(t)
	api := apitest.Start(t, env)
	admin := api.Bootstrap(t, "acme", "orders:read")
	_, secret := createKey(t, api, admin, "checkout")
	v, _ := service(t, env, env.Embedded.ClientURL(), verifier.Options{})

	mux := http.NewServeMux()
	mux.Handle("/orders", verifier.RequireScope("orders:read")(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id, _ := verifier.FromContext(r.Context())
		_, _ = io.WriteString(w, id.OrgID+" "+id.Name)
	})))
	mux.Handle("/refunds", verifier.RequireScope("refunds:write")(http.NotFoundHandler()))
	srv := httptest.NewServer(v.Middleware(mux))
	defer srv.Close()

	for _, tc := range []struct {
		name, path, header, value string
		status                    int
		body                      string
	}{
		{"BearerKey", "/orders", "Authorization", "Bearer " + secret, 200, "acme checkout"},
		{"XAPIKey", "/orders", "X-API-Key", secret, 200, "acme checkout"},
		{"NoKey", "/orders", "", "", 401, `"code":"unauthenticated"`},
		{"UnknownKey", "/orders", "X-API-Key", "c8k_nope", 401, "MALFORMED"},
		{"MissingScope", "/refunds", "X-API-Key", secret, 403, `"code":"forbidden"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequest("GET", srv.URL+tc.path, nil)
			if tc.header != "" {
				req.Header.Set(tc.header, tc.value)
			}
			res, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer res.Body.Close()
			body, _ := io.ReadAll(res.Body)
			if res.StatusCode != tc.status || !strings.Contains(string(body), tc.body) {
				t.Errorf("%d %s, want %d with %s", res.StatusCode, body, tc.status, tc.body)
			}
			if strings.Contains(string(body), secret) {
				t.Error("an answer holds the key")
			}
		})
	}
}

// TestServiceIsToldOfALeak: a key reported leaked (POST /v1/leaks) reaches
// a service's verifier as OnLeaked, with the URL, then OnRevoked; the key
// is refused there at once.
func TestServiceIsToldOfALeak(t *testing.T) {
	env := natstest.StartListening(t)
	api := apitest.Start(t, env)
	admin := api.Bootstrap(t, "acme", "orders:read")
	id, secret := createKey(t, api, admin, "checkout")
	told := make(chan string, 2)
	v, _ := service(t, env, env.Embedded.ClientURL(), verifier.Options{
		OnLeaked: func(e verifier.Event) {
			if d, ok := e.Data.(domain.KeyLeakReported); ok && e.KeyID == id {
				told <- "leaked at " + d.URL
			}
		},
		OnRevoked: func(e verifier.Event) { told <- "revoked" },
	})
	if status, out := call(t, "POST", api.URL+"/v1/leaks", admin, `{"token":"`+secret+`","url":"https://github.com/o/r/blob/c/.env"}`); status != http.StatusOK {
		t.Fatalf("report: %d %v", status, out)
	}
	for _, want := range []string{"leaked at https://github.com/o/r/blob/c/.env", "revoked"} {
		select {
		case got := <-told:
			if got != want {
				t.Errorf("told %q, want %q", got, want)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("the service was never told %q", want)
		}
	}
	if got := v.Verify(secret); got.Code != domain.VerifyRevoked {
		t.Errorf("after the leak the service's verifier says %s, want REVOKED", got.Code)
	}
}
