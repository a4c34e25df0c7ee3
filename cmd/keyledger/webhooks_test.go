package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"
)

// hookReceiver is a webhook endpoint on 127.0.0.1 that checks every
// delivery with the Standard Webhooks Go library, never with keyledger's
// own signing code, and keeps those it verified and answered.
type hookReceiver struct {
	*httptest.Server
	mu       sync.Mutex
	secret   string
	requests int            // every request, verified or not
	bad      int            // requests that did not verify
	got      []hookDelivery // verified and answered 204, in arrival order
	holdNext bool           // hold the next verified delivery open, unanswered
	held     chan hookDelivery
	release  chan struct{}
}

// hookDelivery is one verified delivery: its webhook-id and envelope.
type hookDelivery struct {
	ID, EventID, Type, KeyID string
}

func newHookReceiver(t *testing.T) *hookReceiver {
	t.Helper()
	rc := &hookReceiver{held: make(chan hookDelivery, 1), release: make(chan struct{})}
	rc.Server = httptest.NewServer(http.HandlerFunc(rc.serve))
	t.Cleanup(rc.Close)
	t.Cleanup(func() { close(rc.release) }) // first: a held request must end before Close can
	return rc
}

func (rc *hookReceiver) serve(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	rc.mu.Lock()
	rc.requests++
	wh, err := standardwebhooks.NewWebhook(rc.secret)
	if err == nil {
		err = wh.Verify(body, r.Header)
	}
	if err != nil {
		rc.bad++
		rc.mu.Unlock()
		http.Error(w, "bad signature", http.StatusBadRequest)
		return
	}
	var env struct {
		EventID string `json:"event_id"`
		Type    string `json:"type"`
		KeyID   string `json:"key_id"`
	}
	_ = json.Unmarshal(body, &env)
	d := hookDelivery{ID: r.Header.Get("webhook-id"), EventID: env.EventID, Type: env.Type, KeyID: env.KeyID}
	hold := rc.holdNext
	rc.holdNext = false
	if !hold {
		rc.got = append(rc.got, d)
	}
	rc.mu.Unlock()
	if hold {
		rc.held <- d
		select {
		case <-r.Context().Done(): // the sender is gone
		case <-rc.release: // the test is over
		}
		panic(http.ErrAbortHandler) // never answered
	}
	w.WriteHeader(http.StatusNoContent)
}

// holdNextDelivery makes the receiver hold the next verified delivery
// open, never answering it.
func (rc *hookReceiver) holdNextDelivery() {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	rc.holdNext = true
}

func (rc *hookReceiver) setSecret(s string) {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	rc.secret = s
}

// seen returns the deliveries answered so far, and how many requests came
// and did not verify.
func (rc *hookReceiver) seen() (got []hookDelivery, requests, bad int) {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return append([]hookDelivery(nil), rc.got...), rc.requests, rc.bad
}

// waitFor waits until n deliveries have been answered.
func (rc *hookReceiver) waitFor(t *testing.T, n int, within time.Duration) []hookDelivery {
	t.Helper()
	var got []hookDelivery
	hookWait(t, within, fmt.Sprintf("%d verified deliveries", n), func() bool {
		got, _, _ = rc.seen()
		return len(got) >= n
	})
	return got
}

// hookWait polls ok until it holds, failing the test after within.
func hookWait(t *testing.T, within time.Duration, what string, ok func() bool) {
	t.Helper()
	for deadline := time.Now().Add(within); !ok(); time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("no %s within %s", what, within)
		}
	}
}

// hookAPI sends body (JSON, or none when nil) to an instance as token, and
// returns the status, the answer and the sequence it names.
func hookAPI(t *testing.T, base, token, method, path string, body any) (int, []byte, string) {
	t.Helper()
	var in io.Reader
	if body != nil {
		raw, _ := json.Marshal(body)
		in = bytes.NewReader(raw)
	}
	req, _ := http.NewRequest(method, base+path, in)
	req.Header.Set("Authorization", "Bearer "+token)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	res, err := (&http.Client{Timeout: 30 * time.Second}).Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer res.Body.Close()
	out, _ := io.ReadAll(res.Body)
	return res.StatusCode, out, res.Header.Get("X-Keyledger-Seq")
}

// hookAdmin bootstraps org acme with a key that manages keys and webhooks.
func hookAdmin(t *testing.T, dir string, env []string) string {
	t.Helper()
	out, stderr, err := runBinary(t, dir, env, "bootstrap", "--org", "acme", "--name", "admin", "--scopes", "keys:manage,webhooks:manage")
	if err != nil {
		t.Fatalf("bootstrap: %v %s", err, stderr)
	}
	return strings.TrimSpace(out)
}

// hookEndpoint creates an endpoint for every key event of acme and returns
// its id and signing secret.
func hookEndpoint(t *testing.T, p *process, admin, url string) (id, secret string) {
	t.Helper()
	code, body, _ := hookAPI(t, p.url, admin, "POST", "/v1/orgs/acme/webhooks", map[string]any{"url": url})
	var out struct {
		Webhook struct{ ID string }
		Secret  string
	}
	if err := json.Unmarshal(body, &out); code != http.StatusCreated || err != nil || out.Secret == "" {
		t.Fatalf("create endpoint %s: %d %s", url, code, body)
	}
	return out.Webhook.ID, out.Secret
}

// hookKey runs one command on a key of acme and returns the answer's
// sequence; id is "" to create one, whose id is then returned.
func hookKey(t *testing.T, p *process, admin, method, id string) (string, string) {
	t.Helper()
	path, want, body := "/v1/orgs/acme/keys", http.StatusCreated, any(map[string]any{"name": "watched"})
	switch method {
	case "rotate":
		method, path, want, body = "POST", path+"/"+id+"/rotate", http.StatusOK, nil
	case "revoke":
		method, path, want, body = "DELETE", path+"/"+id, http.StatusNoContent, nil
	}
	code, raw, seq := hookAPI(t, p.url, admin, method, path, body)
	if code != want {
		t.Fatalf("%s %s: %d %s", method, path, code, raw)
	}
	if id == "" {
		var out struct{ Key struct{ ID string } }
		_ = json.Unmarshal(raw, &out)
		id = out.Key.ID
	}
	return id, seq
}

// hookAttempt is a delivery attempt as GET …/deliveries lists it.
type hookAttempt struct {
	ID        string `json:"id"`
	EventID   string `json:"event_id"`
	EventType string `json:"event_type"`
	Attempt   int    `json:"attempt"`
	Result    string `json:"result"`
	Code      int    `json:"response_code"`
	Error     string `json:"error"`
	NextAt    string `json:"next_attempt_at"`
	Instance  string `json:"instance"`
	Manual    bool   `json:"manual"`
}

func hookAttempts(t *testing.T, p *process, admin, id string) []hookAttempt {
	t.Helper()
	code, body, _ := hookAPI(t, p.url, admin, "GET", "/v1/orgs/acme/webhooks/"+id+"/deliveries?limit=100", nil)
	var out struct{ Deliveries []hookAttempt }
	if err := json.Unmarshal(body, &out); code != http.StatusOK || err != nil {
		t.Fatalf("deliveries of %s: %d %s", id, code, body)
	}
	return out.Deliveries
}

// checkHookOrder checks that got holds each key's events exactly as want
// lists them, each once, and each delivery's webhook-id is its event's id.
func checkHookOrder(t *testing.T, got []hookDelivery, want map[string][]string) {
	t.Helper()
	ids := map[string]bool{}
	perKey := map[string][]string{}
	for _, d := range got {
		if ids[d.ID] {
			t.Errorf("event %s (%s of %s) was delivered and answered twice", d.ID, d.Type, d.KeyID)
		}
		ids[d.ID] = true
		if d.ID != d.EventID {
			t.Errorf("webhook-id %s is not the id of the event delivered, %s", d.ID, d.EventID)
		}
		perKey[d.KeyID] = append(perKey[d.KeyID], d.Type)
	}
	for key, types := range want {
		if !slices.Equal(perKey[key], types) {
			t.Errorf("key %s: delivered %v, want %v in that order", key, perKey[key], types)
		}
	}
	if len(perKey) != len(want) {
		t.Errorf("deliveries of %d keys, want %d: %v", len(perKey), len(want), perKey)
	}
}

// TestWebhookInFlightAtSIGKILLIsDeliveredAgainAfterRestart kills -9 serve
// while the endpoint holds the first delivery open, and restarts it on the
// same data directory: the same event (same webhook-id) arrives again and
// the key's later events follow in order. It comes again once the
// consumer's ack wait has passed (60 s: serve leaves
// webhooks.Options.AckWait at its default), or at once when the embedded
// server had not yet written the consumer's state (it does so at most
// every 100 ms): the kept attempt is then the first, not the second.
func TestWebhookInFlightAtSIGKILLIsDeliveredAgainAfterRestart(t *testing.T) {
	if testing.Short() {
		t.Skip("a crash test that waits out the consumer's 60 s ack wait: not in -short")
	}
	dir := t.TempDir()
	addr := freeAddr(t)
	env := []string{"KEYLEDGER_DATA_DIR=" + dir + "/data", "KEYLEDGER_HTTP_ADDR=" + addr, "KEYLEDGER_WRITE_RATE_LIMIT=0"}
	flags := []string{"--webhooks-allow-http", "--webhooks-allow-private"}
	admin := hookAdmin(t, dir, env)
	first := serveProcess(t, dir, addr, env, flags...)
	rc := newHookReceiver(t)
	rc.holdNextDelivery()
	hook, secret := hookEndpoint(t, first, admin, rc.URL+"/hooks")
	rc.setSecret(secret)
	key, _ := hookKey(t, first, admin, "POST", "")

	var held hookDelivery
	select {
	case held = <-rc.held:
	case <-time.After(60 * time.Second):
		t.Fatalf("the KeyCreated was not delivered within 60 s\n%s", first.stderr)
	}
	if held.Type != "KeyCreated" || held.KeyID != key {
		t.Fatalf("held %+v, want the KeyCreated of %s", held, key)
	}
	if err := first.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-first.done
	killedAt := time.Now()

	again := serveProcess(t, dir, addr, env, flags...)
	hookKey(t, again, admin, "rotate", key)
	hookKey(t, again, admin, "revoke", key)
	got := rc.waitFor(t, 3, 3*time.Minute)
	t.Logf("the held event and the two after it arrived within %s of the kill", time.Since(killedAt).Round(time.Second))
	if got[0].ID != held.ID {
		t.Errorf("first delivery after the restart %+v, want the held one again, %s", got[0], held.ID)
	}
	checkHookOrder(t, got, map[string][]string{key: {"KeyCreated", "KeyRotated", "KeyRevoked"}})
	if _, _, bad := rc.seen(); bad > 0 {
		t.Errorf("%d deliveries did not verify", bad)
	}

	// Attempts are kept after the ack: wait for the last one's.
	var atts []hookAttempt
	hookWait(t, 30*time.Second, "three attempts kept", func() bool {
		atts = hookAttempts(t, again, admin, hook)
		return len(atts) >= 3
	})
	killed, restarted := "/"+strconv.Itoa(first.cmd.Process.Pid), "/"+strconv.Itoa(again.cmd.Process.Pid)
	succeeded := false
	for _, a := range atts {
		if strings.HasSuffix(a.Instance, killed) {
			t.Errorf("an attempt is kept from the instance killed in flight: %+v", a)
		}
		if a.EventID == held.ID && a.Result == "succeeded" && a.Code == http.StatusNoContent && strings.HasSuffix(a.Instance, restarted) {
			succeeded = true
			t.Logf("kept: %s attempt %d by %s", a.Result, a.Attempt, a.Instance)
		}
	}
	if !succeeded {
		t.Errorf("no succeeded attempt of %s by the restarted instance in %+v", held.ID, atts)
	}
}

// TestWebhookAnsweredBeforeSIGKILLIsNotSentAgain kills -9 serve right
// after its endpoint answered a burst of deliveries, several times over.
// The embedded server writes a consumer's acknowledgements to disk only
// every 100 ms or so, so a restart used to hand out again what had been
// answered (70 deliveries for 20 events in four such rounds); the mark
// each delivery leaves, synced, before its acknowledgement, keeps every
// event to one answered delivery. An event answered after the mark and
// before the ack may still come twice: none in this test is.
func TestWebhookAnsweredBeforeSIGKILLIsNotSentAgain(t *testing.T) {
	if testing.Short() {
		t.Skip("a crash test that may wait out the consumer's 60 s ack wait: not in -short")
	}
	dir := t.TempDir()
	addr := freeAddr(t)
	env := []string{"KEYLEDGER_DATA_DIR=" + dir + "/data", "KEYLEDGER_HTTP_ADDR=" + addr, "KEYLEDGER_WRITE_RATE_LIMIT=0"}
	flags := []string{"--webhooks-allow-http", "--webhooks-allow-private"}
	admin := hookAdmin(t, dir, env)
	p := serveProcess(t, dir, addr, env, flags...)
	rc := newHookReceiver(t)
	_, secret := hookEndpoint(t, p, admin, rc.URL+"/hooks")
	rc.setSecret(secret)
	want := map[string][]string{}
	const rounds, burst = 3, 5
	for round := range rounds {
		for range burst {
			key, _ := hookKey(t, p, admin, "POST", "")
			want[key] = []string{"KeyCreated"}
		}
		rc.waitFor(t, (round+1)*burst, 3*time.Minute)
		if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		<-p.done
		p = serveProcess(t, dir, addr, env, flags...)
	}
	// A last event: with one delivery in flight per endpoint it arrives
	// only after whatever the restarts handed out again was dealt with.
	last, _ := hookKey(t, p, admin, "POST", "")
	want[last] = []string{"KeyCreated"}
	hookWait(t, 3*time.Minute, "the last key's delivery", func() bool {
		got, _, _ := rc.seen()
		return slices.ContainsFunc(got, func(d hookDelivery) bool { return d.KeyID == last })
	})
	got, requests, bad := rc.seen()
	checkHookOrder(t, got, want)
	if requests != len(want) || bad != 0 {
		t.Errorf("%d requests (%d did not verify) for %d events", requests, bad, len(want))
	}
}

// TestWebhookTwoInstancesNeverDeliverTheSameAttempt runs two instances on
// one NATS with the same secrets key, makes 30 key events through both,
// and checks that each arrives once, in order per key: the endpoint's one
// durable consumer, one message in flight, is shared by both instances.
func TestWebhookTwoInstancesNeverDeliverTheSameAttempt(t *testing.T) {
	if testing.Short() {
		t.Skip("two instances: not in -short")
	}
	dir := t.TempDir()
	ns := natsOn(t, -1, dir+"/nats")
	t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
	env := []string{"KEYLEDGER_NATS_URL=" + ns.ClientURL(), "KEYLEDGER_SIGNING_KEY=" + filepath.Join(dir, "signing.pem"), "KEYLEDGER_WRITE_RATE_LIMIT=0"}
	admin := hookAdmin(t, dir, env)
	flags := []string{"--webhooks-allow-http", "--webhooks-allow-private", "--webhook-secrets-key", filepath.Join(dir, "webhook-secrets.key")}
	var instances []*process
	for range 2 {
		addr := freeAddr(t)
		instances = append(instances, serveProcess(t, dir, addr, append([]string{"KEYLEDGER_HTTP_ADDR=" + addr}, env...), flags...))
	}
	rc := newHookReceiver(t)
	hook, secret := hookEndpoint(t, instances[0], admin, rc.URL+"/hooks")
	rc.setSecret(secret)

	// Six keys, each created, rotated three times and revoked, their
	// commands interleaved and alternating between the instances.
	const keys = 6
	steps := []string{"rotate", "rotate", "rotate", "revoke"}
	ids, seqs := make([]string, keys), make([]string, keys)
	want := map[string][]string{}
	for k := range keys {
		ids[k], seqs[k] = hookKey(t, instances[k%2], admin, "POST", "")
		want[ids[k]] = []string{"KeyCreated", "KeyRotated", "KeyRotated", "KeyRotated", "KeyRevoked"}
	}
	for i, step := range steps {
		for k := range keys {
			inst := instances[(k+i+1)%2]
			// The other instance applies the key's last command first.
			if code, body, _ := hookAPI(t, inst.url, admin, "GET", "/v1/orgs/acme/keys/"+ids[k]+"?min_seq="+seqs[k], nil); code != http.StatusOK {
				t.Fatalf("read %s at %s: %d %s", ids[k], seqs[k], code, body)
			}
			_, seqs[k] = hookKey(t, inst, admin, step, ids[k])
		}
	}
	total := keys * (1 + len(steps))
	rc.waitFor(t, total, 3*time.Minute)
	var atts []hookAttempt
	hookWait(t, 30*time.Second, fmt.Sprintf("%d attempts kept", total), func() bool {
		atts = hookAttempts(t, instances[1], admin, hook)
		return len(atts) >= total
	})

	// The consumer says how often it handed a message out: once each.
	nc, err := nats.Connect(ns.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	stream, err := js.Stream(ctx, "KEYLEDGER")
	if err != nil {
		t.Fatal(err)
	}
	var info *jetstream.ConsumerInfo
	for ci := range stream.ListConsumers(ctx).Info() {
		if ci.Config.Description == "keyledger webhook "+hook {
			info = ci
		}
	}
	if info == nil {
		t.Fatalf("no consumer of endpoint %s", hook)
	}
	if info.Delivered.Consumer != uint64(total) || info.NumRedelivered != 0 || info.NumAckPending != 0 || info.NumPending != 0 {
		t.Errorf("consumer handed out %d messages (%d redelivered, %d awaiting ack, %d pending), want each of %d once",
			info.Delivered.Consumer, info.NumRedelivered, info.NumAckPending, info.NumPending, total)
	}

	got, requests, bad := rc.seen()
	if requests != total || bad != 0 {
		t.Errorf("the receiver had %d requests (%d unverified), want %d", requests, bad, total)
	}
	checkHookOrder(t, got, want)
	byInstance := map[string]int{}
	perEvent := map[string]int{}
	for _, a := range atts {
		byInstance[a.Instance]++
		perEvent[a.EventID]++
		if a.Result != "succeeded" || a.Attempt != 1 {
			t.Errorf("attempt %+v, want the first and only, succeeded", a)
		}
	}
	for id, n := range perEvent {
		if n != 1 {
			t.Errorf("event %s has %d attempts kept, want 1", id, n)
		}
	}
	t.Logf("%d events delivered once each, in order per key; attempts by instance: %v", total, byInstance)
}

// TestWebhooksAreOffWithNATSURLAndNoSecretsKey starts serve on an existing
// NATS without --webhook-secrets-key: it says webhooks are off, and their
// routes are not there.
func TestWebhooksAreOffWithNATSURLAndNoSecretsKey(t *testing.T) {
	dir := t.TempDir()
	ns := natsOn(t, -1, dir+"/nats")
	t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
	addr := freeAddr(t)
	env := []string{"KEYLEDGER_NATS_URL=" + ns.ClientURL(), "KEYLEDGER_SIGNING_KEY=" + filepath.Join(dir, "signing.pem"), "KEYLEDGER_HTTP_ADDR=" + addr}
	admin := hookAdmin(t, dir, env)
	p := serveProcess(t, dir, addr, env, "--webhooks-allow-http", "--webhooks-allow-private")
	if log := p.stderr.String(); !strings.Contains(log, "webhooks are off") || !strings.Contains(log, "--webhook-secrets-key") {
		t.Errorf("serve does not say webhooks are off, nor how to turn them on:\n%s", log)
	}
	if code, body, _ := hookAPI(t, p.url, admin, "GET", "/v1/orgs/acme/keys", nil); code != http.StatusOK {
		t.Fatalf("the admin key lists keys: %d %s", code, body)
	}
	for _, r := range []struct {
		method, path string
		body         any
	}{
		{"GET", "/v1/orgs/acme/webhooks", nil},
		{"POST", "/v1/orgs/acme/webhooks", map[string]any{"url": "http://127.0.0.1:1/hooks"}},
	} {
		if code, body, _ := hookAPI(t, p.url, admin, r.method, r.path, r.body); code != http.StatusNotFound {
			t.Errorf("%s %s with webhooks off: %d %s, want 404", r.method, r.path, code, body)
		}
	}
}

// TestWebhookToLoopbackIsRefusedWithoutAllowPrivate serves with
// --webhooks-allow-http only: an endpoint at a loopback address is refused
// when created (400); one at a name resolving to loopback is created, and
// its deliveries are refused by the dialer and kept as "refused".
func TestWebhookToLoopbackIsRefusedWithoutAllowPrivate(t *testing.T) {
	dir := t.TempDir()
	addr := freeAddr(t)
	env := []string{"KEYLEDGER_DATA_DIR=" + dir + "/data", "KEYLEDGER_HTTP_ADDR=" + addr}
	admin := hookAdmin(t, dir, env)
	p := serveProcess(t, dir, addr, env, "--webhooks-allow-http")
	rc := newHookReceiver(t)
	_, port, _ := strings.Cut(strings.TrimPrefix(rc.URL, "http://"), ":")

	for _, host := range []string{"127.0.0.1", "127.9.9.9", "[::1]"} {
		code, body, _ := hookAPI(t, p.url, admin, "POST", "/v1/orgs/acme/webhooks", map[string]any{"url": "http://" + host + ":" + port + "/hooks"})
		if code != http.StatusBadRequest || !strings.Contains(string(body), "loopback") {
			t.Errorf("create an endpoint at %s: %d %s, want 400 naming loopback", host, code, body)
		}
	}
	code, body, _ := hookAPI(t, p.url, admin, "GET", "/v1/orgs/acme/webhooks", nil)
	var list struct{ Webhooks []json.RawMessage }
	if err := json.Unmarshal(body, &list); code != http.StatusOK || err != nil || len(list.Webhooks) != 0 {
		t.Errorf("endpoints after the refusals: %d %s, want none", code, body)
	}

	hook, secret := hookEndpoint(t, p, admin, "http://localhost:"+port+"/hooks")
	rc.setSecret(secret)
	hookKey(t, p, admin, "POST", "")
	var atts []hookAttempt
	hookWait(t, 60*time.Second, "attempt kept", func() bool {
		atts = hookAttempts(t, p, admin, hook)
		return len(atts) > 0
	})
	if a := atts[0]; a.Result != "refused" || a.EventType != "KeyCreated" || a.Code != 0 || !strings.Contains(a.Error, "loopback") {
		t.Errorf("delivery to localhost: %+v, want refused as loopback", a)
	} else {
		t.Logf("kept: %s, %q, next attempt at %s", a.Result, a.Error, a.NextAt)
	}
	code, body, _ = hookAPI(t, p.url, admin, "POST", "/v1/orgs/acme/webhooks/"+hook+"/test", nil)
	var test hookAttempt
	if err := json.Unmarshal(body, &test); code != http.StatusOK || err != nil || test.Result != "refused" || !test.Manual {
		t.Errorf("test event to localhost: %d %s, want 200 with a refused attempt", code, body)
	}
	if _, requests, _ := rc.seen(); requests != 0 {
		t.Errorf("the receiver on loopback had %d requests, want none", requests)
	}
}
