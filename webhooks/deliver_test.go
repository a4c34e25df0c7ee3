package webhooks_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"

	"github.com/keyledger/keyledger/domain"
	"github.com/keyledger/keyledger/events"
	"github.com/keyledger/keyledger/internal/natstest"
	"github.com/keyledger/keyledger/projections"
	"github.com/keyledger/keyledger/webhooks"
)

// instance is one keyledger instance's part in deliveries: its own store
// handle, projections, registry and deliverer, on the shared NATS.
type instance struct {
	store *events.Store
	reg   *webhooks.Registry
	vault *webhooks.Vault
	del   *webhooks.Deliverer
	keys  *domain.Keys
	stop  context.CancelFunc
}

var fast = []time.Duration{200 * time.Millisecond, 300 * time.Millisecond, 300 * time.Millisecond}

func startInstance(t *testing.T, env *natstest.Env, name string, allowPrivate bool, schedule []time.Duration, configure ...func(*webhooks.Options)) *instance {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	store, err := events.Open(ctx, env.JS, env.Config(natstest.Quiet()))
	if err != nil {
		t.Fatal(err)
	}
	table := projections.NewTable()
	reg := webhooks.NewRegistry()
	if err := reg.Prime(ctx, store.EachWebhookEvent); err != nil {
		t.Fatal(err)
	}
	runner := projections.NewRunner(store, natstest.Quiet(), table, reg) // as serve: the table itself, which keeps what was refused
	store.UseVerdicts(table)                                             // as serve: deliveries judge by the projections' verdicts
	store.OnAppended(runner.Offer)
	go runner.Run(ctx)
	key, err := webhooks.LoadKey(filepath.Join(env.Dir, "webhook-secrets.key"), true)
	if err != nil {
		t.Fatal(err)
	}
	vault, err := webhooks.OpenVault(ctx, env.JS, key, 1)
	if err != nil {
		t.Fatal(err)
	}
	o := webhooks.Options{
		JS: env.JS, Store: store, Vault: vault, Registry: reg, AllowHTTP: true, AllowPrivate: allowPrivate,
		Client: webhooks.NewClient(2*time.Second, allowPrivate), Timeout: 2 * time.Second, AckWait: 8 * time.Second,
		Schedule: schedule, Instance: name, Log: testLog(),
	}
	for _, c := range configure {
		c(&o)
	}
	del, err := webhooks.New(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	go del.Run(ctx)
	if err := runner.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	return &instance{store: store, reg: reg, vault: vault, del: del, keys: &domain.Keys{Store: store}, stop: cancel}
}

// delivery is what the receiver got, verified by the Standard Webhooks
// library, not by keyledger's code.
type delivery struct {
	ID   string
	Env  events.Envelope
	When time.Time
}

// receiver is a webhook endpoint that verifies every delivery with the
// Standard Webhooks Go library and answers as status says.
type receiver struct {
	*httptest.Server
	mu       sync.Mutex
	secret   string
	got      []delivery
	bad      int
	status   func(n int) (int, http.Header) // n: deliveries received so far
	received int
}

func newReceiver(t *testing.T) *receiver {
	rc := &receiver{status: func(int) (int, http.Header) { return 204, nil }}
	rc.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		rc.mu.Lock()
		defer rc.mu.Unlock()
		wh, err := standardwebhooks.NewWebhook(rc.secret)
		if err == nil {
			err = wh.Verify(body, r.Header)
		}
		if err != nil {
			rc.bad++
			http.Error(w, "bad signature", 400)
			return
		}
		rc.received++
		code, h := rc.status(rc.received)
		for k, v := range h {
			w.Header()[k] = v
		}
		if code/100 == 2 {
			var env events.Envelope
			_ = json.Unmarshal(body, &env)
			rc.got = append(rc.got, delivery{ID: r.Header.Get("webhook-id"), Env: env, When: time.Now()})
		}
		w.WriteHeader(code)
		_, _ = w.Write([]byte("answer " + http.StatusText(code)))
	}))
	t.Cleanup(rc.Close)
	return rc
}

func (rc *receiver) deliveries() []delivery {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return append([]delivery(nil), rc.got...)
}

func (rc *receiver) waitFor(t *testing.T, n int, within time.Duration) []delivery {
	t.Helper()
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		if got := rc.deliveries(); len(got) >= n {
			return got
		}
		time.Sleep(20 * time.Millisecond)
	}
	got := rc.deliveries()
	t.Fatalf("receiver got %d deliveries, want %d", len(got), n)
	return got
}

func ptr[T any](v T) *T { return &v }

var manager = domain.PersonPrincipal("u1", "Ada", map[string]string{"acme": domain.RoleManager})

func endpoint(t *testing.T, in *instance, rc *receiver) domain.Webhook {
	t.Helper()
	return endpointAt(t, in, rc, rc.URL+"/hook")
}

func endpointAt(t *testing.T, in *instance, rc *receiver, url string) domain.Webhook {
	t.Helper()
	w, secret, err := in.del.Create(context.Background(), manager, "acme", webhooks.Spec{URL: ptr(url), Description: ptr("test")})
	if err != nil {
		t.Fatal(err)
	}
	rc.mu.Lock()
	rc.secret = secret
	rc.mu.Unlock()
	return w
}

func createKey(t *testing.T, in *instance, name string) string {
	t.Helper()
	iss, err := in.keys.Create(context.Background(), domain.CreateKey{OrgID: "acme", Name: name, By: manager})
	if err != nil {
		t.Fatal(err)
	}
	return iss.Key.ID
}

func TestDeliveriesVerifyAndComeInOrderPerKey(t *testing.T) {
	env := natstest.Start(t)
	in := startInstance(t, env, "a", true, fast)
	rc := newReceiver(t)
	wh := endpoint(t, in, rc)
	ctx := context.Background()
	var ids []string
	for i := range 3 {
		ids = append(ids, createKey(t, in, "k"+string(rune('a'+i))))
	}
	for range 2 {
		for _, id := range ids {
			if _, err := in.keys.Rotate(ctx, "acme", id, domain.RotateKey{By: manager}); err != nil {
				t.Fatal(err)
			}
		}
	}
	for _, id := range ids {
		if _, err := in.keys.Revoke(ctx, "acme", id, domain.RevokeKey{By: manager, Reason: "done"}); err != nil {
			t.Fatal(err)
		}
	}
	got := rc.waitFor(t, 12, 20*time.Second)
	last := map[string]uint64{}
	types := map[string][]string{}
	for _, d := range got {
		if d.ID != d.Env.EventID {
			t.Errorf("webhook-id %s is not the event id %s", d.ID, d.Env.EventID)
		}
		if d.Env.Seq <= last[d.Env.KeyID] {
			t.Errorf("key %s: seq %d delivered after %d", d.Env.KeyID, d.Env.Seq, last[d.Env.KeyID])
		}
		last[d.Env.KeyID] = d.Env.Seq
		types[d.Env.KeyID] = append(types[d.Env.KeyID], d.Env.Type)
	}
	for _, id := range ids {
		if strings.Join(types[id], ",") != "KeyCreated,KeyRotated,KeyRotated,KeyRevoked" {
			t.Errorf("key %s: got %v", id, types[id])
		}
	}
	if rc.bad != 0 {
		t.Errorf("%d deliveries failed the library's verification", rc.bad)
	}
	time.Sleep(300 * time.Millisecond)
	if n := len(rc.deliveries()); n != 12 {
		t.Errorf("got %d deliveries, want exactly 12", n)
	}
	atts, err := in.del.Attempts(ctx, "acme", wh.ID, 100)
	if err != nil || len(atts) != 12 || atts[0].Result != "succeeded" || atts[0].ResponseCode != 204 {
		t.Errorf("attempts: %d, %v, %+v", len(atts), err, atts)
	}
	// The signing secret never rests: only sealed in the store's files.
	rc.mu.Lock()
	secret := rc.secret
	rc.mu.Unlock()
	raw, _ := base64.StdEncoding.DecodeString(strings.TrimPrefix(secret, "whsec_"))
	env.Stop()
	_ = filepath.WalkDir(env.Dir, func(p string, de fs.DirEntry, err error) error {
		if err != nil || de.IsDir() || strings.HasSuffix(p, ".key") {
			return nil
		}
		b, _ := os.ReadFile(p)
		if bytes.Contains(b, []byte(secret)) || bytes.Contains(b, raw) || bytes.Contains(b, []byte(strings.TrimPrefix(secret, "whsec_"))) {
			t.Errorf("%s holds the signing secret", p)
		}
		return nil
	})
}

func TestRetriesAfterAReceiverOutage(t *testing.T) {
	env := natstest.Start(t)
	in := startInstance(t, env, "a", true, fast)
	rc := newReceiver(t)
	rc.status = func(n int) (int, http.Header) {
		switch n {
		case 1:
			return 500, nil
		case 2:
			return 503, http.Header{"Retry-After": {"1"}}
		}
		return 200, nil
	}
	wh := endpoint(t, in, rc)
	first := createKey(t, in, "one")
	second := createKey(t, in, "two")
	got := rc.waitFor(t, 2, 20*time.Second)
	if got[0].Env.KeyID != first || got[1].Env.KeyID != second {
		t.Errorf("delivered out of order after the outage: %s then %s", got[0].Env.KeyID, got[1].Env.KeyID)
	}
	atts, _ := in.del.Attempts(context.Background(), "acme", wh.ID, 100)
	var results []string
	for i := len(atts) - 1; i >= 0; i-- {
		results = append(results, atts[i].Result)
	}
	if strings.Join(results, ",") != "failed,failed,succeeded,succeeded" {
		t.Errorf("attempts, oldest first: %v", results)
	}
	// The 503's Retry-After of 1 s was honoured over the schedule's 300 ms.
	if len(atts) == 4 {
		t0, _ := time.Parse(time.RFC3339Nano, atts[2].At)
		t1, _ := time.Parse(time.RFC3339Nano, atts[1].At)
		if t1.Sub(t0) < 900*time.Millisecond {
			t.Errorf("retried %s after a 503 with Retry-After: 1", t1.Sub(t0))
		}
		if atts[3].ResponseCode != 500 || atts[3].Attempt != 1 || atts[1].Attempt != 3 {
			t.Errorf("attempt records: %+v", atts)
		}
	}
}

func TestGoneDisablesTheEndpointAndEnableResumes(t *testing.T) {
	env := natstest.Start(t)
	in := startInstance(t, env, "a", true, fast)
	rc := newReceiver(t)
	gone := true
	rc.status = func(int) (int, http.Header) {
		if gone {
			return 410, nil
		}
		return 200, nil
	}
	wh := endpoint(t, in, rc)
	k := createKey(t, in, "one")
	deadline := time.Now().Add(10 * time.Second)
	for {
		w, _ := in.reg.Get("acme", wh.ID)
		if w.Disabled {
			if !strings.Contains(w.DisabledWhy, "410") {
				t.Errorf("disabled because %q", w.DisabledWhy)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("a 410 did not disable the endpoint")
		}
		time.Sleep(20 * time.Millisecond)
	}
	page, _, _, err := in.store.OrgEvents(context.Background(), "acme", domain.EventQuery{Limit: 100})
	if err != nil {
		t.Fatal(err)
	}
	var seen []string
	for _, e := range page {
		seen = append(seen, string(e.Type))
	}
	if !strings.Contains(strings.Join(seen, ","), "WebhookCreated,KeyCreated,WebhookDisabled") {
		t.Errorf("history: %v", seen)
	}
	rc.mu.Lock()
	gone = false
	rc.mu.Unlock()
	if _, err := in.del.Enable(context.Background(), manager, "acme", wh.ID); err != nil {
		t.Fatal(err)
	}
	got := rc.waitFor(t, 1, 90*time.Second)
	if got[0].Env.KeyID != k {
		t.Errorf("after enabling, got %+v", got[0].Env)
	}
}

func TestTwoInstancesNeverDeliverTheSameAttempt(t *testing.T) {
	env := natstest.Start(t)
	a := startInstance(t, env, "a", true, fast)
	b := startInstance(t, env, "b", true, fast)
	var rcs []*receiver
	var whs []domain.Webhook
	for range 3 {
		rc := newReceiver(t)
		rcs = append(rcs, rc)
		whs = append(whs, endpoint(t, a, rc))
	}
	const n = 40
	for i := range n {
		in := a
		if i%2 == 1 {
			in = b
		}
		createKey(t, in, "k")
	}
	by := map[string]int{}
	for i, rc := range rcs {
		got := rc.waitFor(t, n, 30*time.Second)
		time.Sleep(200 * time.Millisecond)
		got = rc.deliveries()
		seen := map[string]bool{}
		for _, d := range got {
			if seen[d.ID] {
				t.Errorf("endpoint %d: %s delivered twice", i, d.ID)
			}
			seen[d.ID] = true
		}
		if len(got) != n {
			t.Errorf("endpoint %d: %d deliveries, want %d", i, len(got), n)
		}
		atts, _ := a.del.Attempts(context.Background(), "acme", whs[i].ID, 100)
		for _, at := range atts {
			by[at.Instance]++
			if at.Attempt != 1 {
				t.Errorf("attempt %d of %s with no failure", at.Attempt, at.EventID)
			}
		}
	}
	t.Logf("attempts by instance: %v", by)
}

func TestLoopbackIsRefusedWithoutAllowPrivate(t *testing.T) {
	env := natstest.Start(t)
	in := startInstance(t, env, "a", false, fast)
	rc := newReceiver(t)
	// An address literal is refused at once, with a clear answer...
	_, _, err := in.del.Create(context.Background(), manager, "acme", webhooks.Spec{URL: ptr(rc.URL + "/hook")})
	if domain.ErrorCode(err) != domain.EINVALID || !strings.Contains(err.Error(), "loopback") {
		t.Fatalf("creating an endpoint on 127.0.0.1: %v", err)
	}
	// ...and a name is refused when it resolves, at connection time.
	wh := endpointAt(t, in, rc, strings.Replace(rc.URL, "127.0.0.1", "localhost", 1)+"/hook")
	createKey(t, in, "one")
	deadline := time.Now().Add(10 * time.Second)
	for {
		atts, _ := in.del.Attempts(context.Background(), "acme", wh.ID, 100)
		if len(atts) > 0 {
			if atts[0].Result != "refused" || !strings.Contains(atts[0].Error, "loopback") {
				t.Errorf("attempt: %+v", atts[0])
			}
			if strings.Contains(atts[0].Error, rc.URL) {
				t.Errorf("the endpoint's URL is in the error: %s", atts[0].Error)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no attempt recorded")
		}
		time.Sleep(20 * time.Millisecond)
	}
	rc.mu.Lock()
	defer rc.mu.Unlock()
	if rc.received+rc.bad != 0 {
		t.Errorf("the loopback receiver was reached %d times", rc.received+rc.bad)
	}
}

func testLog() *slog.Logger {
	if os.Getenv("WEBHOOK_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	return natstest.Quiet()
}

// A receiver's redirect is an answer, never followed: the attempt fails
// with the 3xx, and the place it points to is never reached.
func TestRedirectsAreNotFollowed(t *testing.T) {
	env := natstest.Start(t)
	in := startInstance(t, env, "a", true, fast)
	elsewhere := newReceiver(t)
	rc := newReceiver(t)
	rc.status = func(int) (int, http.Header) { return 307, http.Header{"Location": {elsewhere.URL + "/stolen"}} }
	wh := endpoint(t, in, rc)
	elsewhere.secret = rc.secret
	createKey(t, in, "one")
	deadline := time.Now().Add(10 * time.Second)
	for {
		atts, _ := in.del.Attempts(context.Background(), "acme", wh.ID, 100)
		if len(atts) > 0 {
			if atts[0].Result != "failed" || atts[0].ResponseCode != 307 {
				t.Errorf("attempt: %+v", atts[0])
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no attempt recorded")
		}
		time.Sleep(20 * time.Millisecond)
	}
	elsewhere.mu.Lock()
	defer elsewhere.mu.Unlock()
	if elsewhere.received+elsewhere.bad != 0 {
		t.Error("the redirect was followed")
	}
}

// Someone with the service credential publishes an unsigned KeyRevoked
// on a key's subject: the endpoint is never told of it; the next real
// event still comes.
func TestForgedEventsAreNotDelivered(t *testing.T) {
	env := natstest.Start(t)
	in := startInstance(t, env, "a", true, fast)
	rc := newReceiver(t)
	endpoint(t, in, rc)
	k := createKey(t, in, "one")
	rc.waitFor(t, 1, 10*time.Second)
	forged := `{"event_id":"01M8DA3SKKJTHVC8T1EHEEKS8P","type":"KeyRevoked","schema_version":1,"org_id":"acme","key_id":"` + k + `","occurred_at":"2026-12-02T10:00:00.000000Z","actor":{"kind":"user","id":"x","name":"x"},"prev_hash":"","data":{"reason":"forged"}}`
	if _, err := env.JS.Publish(context.Background(), events.Subject("acme", k, domain.TypeKeyRevoked), []byte(forged)); err != nil {
		t.Fatal(err)
	}
	second := createKey(t, in, "two")
	got := rc.waitFor(t, 2, 10*time.Second)
	time.Sleep(300 * time.Millisecond)
	got = rc.deliveries()
	if len(got) != 2 || got[1].Env.KeyID != second {
		t.Errorf("deliveries after a forgery: %+v", got)
	}
}
