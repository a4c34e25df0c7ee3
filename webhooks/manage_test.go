package webhooks_test

import (
	"bytes"
	"context"
	"io/fs"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/keyledger/keyledger/domain"
	"github.com/keyledger/keyledger/internal/natstest"
	"github.com/keyledger/keyledger/webhooks"
)

// waitUntil polls cond for up to within.
func waitUntil(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(within); !cond(); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("never: %s", what)
		}
	}
}

func attempts(t *testing.T, in *instance, id string) []webhooks.Attempt {
	t.Helper()
	atts, err := in.del.Attempts(context.Background(), "acme", id, 100)
	if err != nil {
		t.Fatal(err)
	}
	return atts
}

// A URL's path and query may be a bearer token (a Slack hook's is): it is
// sealed, never in the stream's files nor in an attempt's error nor in a
// log line, however it is spelt (the red team's URL held a quote, which
// the client's errors escape, and its token went through a scrub that
// only knew the plain form).
func TestAnEndpointsURLNeverRests(t *testing.T) {
	env := natstest.Start(t)
	var logs syncBuf
	in := startInstance(t, env, "a", true, fast, func(o *webhooks.Options) {
		o.Log = slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	})
	const token = "T0KENxq7Zr9"
	rc := newReceiver(t)
	wh := endpointAt(t, in, rc, `http://127.0.0.1:1/services/`+token+`?sig=`+token+`"x`)
	if strings.Contains(wh.URLMasked, token) {
		t.Errorf("masked URL %q holds the token", wh.URLMasked)
	}
	createKey(t, in, "one")
	waitUntil(t, 10*time.Second, "a failed attempt", func() bool { return len(attempts(t, in, wh.ID)) > 0 })
	a := attempts(t, in, wh.ID)[0]
	if a.Result != "failed" || a.Error == "" || strings.Contains(a.Error, token) || strings.Contains(a.Error, "%22") {
		t.Errorf("attempt: %+v", a)
	}
	if strings.Contains(logs.String(), token) {
		t.Error("the token is in the logs")
	}
	env.Stop()
	_ = filepath.WalkDir(env.Dir, func(p string, de fs.DirEntry, err error) error {
		if err == nil && !de.IsDir() {
			if b, _ := os.ReadFile(p); bytes.Contains(b, []byte(token)) {
				t.Errorf("%s holds the URL's token", p)
			}
		}
		return nil
	})
}

type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// Bad input gets a clear EINVALID and appends nothing. An event type no
// endpoint can want was once taken, which made a consumer with no filter:
// every event of every org.
func TestCreateRefusesBadInputAndAppendsNothing(t *testing.T) {
	env := natstest.Start(t)
	in := startInstance(t, env, "a", true, fast)
	rc := newReceiver(t)
	ok := rc.URL + "/hook"
	for name, spec := range map[string]webhooks.Spec{
		"no url":          {},
		"unknown type":    {URL: ptr(ok), EventTypes: ptr([]string{"KeyDeleted"})},
		"endpoint events": {URL: ptr(ok), EventTypes: ptr([]string{"WebhookCreated"})},
		"ftp":             {URL: ptr("ftp://example.com/x")},
		"relative":        {URL: ptr("/hook")},
		"user in url":     {URL: ptr("https://a:b@example.com/x")},
		"metadata":        {URL: ptr("http://169.254.169.254/latest")},
		"long desc":       {URL: ptr(ok), Description: ptr(strings.Repeat("d", 300))},
		"control chars":   {URL: ptr(ok), Description: ptr("a\x00b")},
	} {
		if _, _, err := in.del.Create(context.Background(), manager, "acme", spec); domain.ErrorCode(err) != domain.EINVALID {
			t.Errorf("%s: %v, want invalid", name, err)
		}
	}
	reader := domain.PersonPrincipal("u2", "Bob", map[string]string{"acme": "viewer"})
	if _, _, err := in.del.Create(context.Background(), reader, "acme", webhooks.Spec{URL: ptr(ok)}); domain.ErrorCode(err) != domain.EFORBIDDEN {
		t.Errorf("a member: %v", err)
	}
	if _, _, err := in.del.Create(context.Background(), manager, "other", webhooks.Spec{URL: ptr(ok)}); domain.ErrorCode(err) != domain.EFORBIDDEN {
		t.Errorf("another org: %v", err)
	}
	page, _, _, err := in.store.OrgEvents(context.Background(), "acme", domain.EventQuery{Limit: 10})
	if err != nil || len(page) != 0 {
		t.Errorf("appended %d events (%v)", len(page), err)
	}
}

// Endpoint events of several endpoints may reach a registry in any order
// between them: a Create applies its own event at once, before the feed
// brings another endpoint's earlier Disable. The red team found the
// earlier event skipped (one last-applied sequence for all endpoints).
func TestRegistryKeepsEachEndpointsOwnOrder(t *testing.T) {
	env := natstest.Start(t)
	a := startInstance(t, env, "a", true, fast)
	rc := newReceiver(t)
	w1 := endpoint(t, a, rc)
	if _, err := a.del.Disable(context.Background(), manager, "acme", w1.ID, "paused"); err != nil {
		t.Fatal(err)
	}
	var evs []domain.Event
	if err := a.store.EachWebhookEvent(context.Background(), func(e domain.Event) error { evs = append(evs, e); return nil }); err != nil {
		t.Fatal(err)
	}
	w2 := endpoint(t, a, newReceiver(t))
	var all []domain.Event
	_ = a.store.EachWebhookEvent(context.Background(), func(e domain.Event) error { all = append(all, e); return nil })
	if len(evs) != 2 || len(all) != 3 {
		t.Fatalf("events: %d then %d", len(evs), len(all))
	}
	reg := webhooks.NewRegistry()
	for _, e := range []domain.Event{all[0], all[2], all[1]} { // w1 created, w2 created, w1 disabled
		_ = reg.Apply(e)
	}
	got, _ := reg.Get("acme", w1.ID)
	if !got.Disabled {
		t.Error("w1's Disable, which came after w2's later Create, was skipped")
	}
	if _, ok := reg.Get("acme", w2.ID); !ok {
		t.Error("w2 missing")
	}
	_ = reg.Apply(all[1]) // again: applied once
	if got2, _ := reg.Get("acme", w1.ID); got2.Version != got.Version {
		t.Error("an event applied twice")
	}
}

// An endpoint disabled for failing too long and enabled again starts with
// a clean slate: the red team found it disabled again at its first
// failure, since the failing-since mark outlived the enable.
func TestEnabledAgainAnEndpointIsNotDisabledAtItsFirstFailure(t *testing.T) {
	env := natstest.Start(t)
	var every []time.Duration
	for range 30 {
		every = append(every, 300*time.Millisecond)
	}
	in := startInstance(t, env, "a", true, every,
		func(o *webhooks.Options) { o.DisableAfter = 1500 * time.Millisecond })
	rc := newReceiver(t)
	rc.status = func(int) (int, http.Header) { return 500, nil }
	wh := endpoint(t, in, rc)
	createKey(t, in, "one")
	waitUntil(t, 20*time.Second, "disabled for failing", func() bool { w, _ := in.reg.Get("acme", wh.ID); return w.Disabled })
	if w, _ := in.reg.Get("acme", wh.ID); !strings.Contains(w.DisabledWhy, "failing since") {
		t.Errorf("disabled because %q", w.DisabledWhy)
	}
	before := len(attempts(t, in, wh.ID))
	if _, err := in.del.Enable(context.Background(), manager, "acme", wh.ID); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, 20*time.Second, "an attempt after enabling", func() bool { return len(attempts(t, in, wh.ID)) > before })
	time.Sleep(200 * time.Millisecond)
	if w, _ := in.reg.Get("acme", wh.ID); w.Disabled {
		t.Error("disabled again at its first failure after being enabled")
	}
	// Still failing past DisableAfter from the enable: disabled again.
	waitUntil(t, 20*time.Second, "disabled again after failing as long again", func() bool { w, _ := in.reg.Get("acme", wh.ID); return w.Disabled })
}

// Creates at once on two instances cannot pass the org's bound: each
// claims a slot atomically. A delete frees its slot.
func TestConcurrentCreatesStopAtTheBound(t *testing.T) {
	env := natstest.Start(t)
	a := startInstance(t, env, "a", true, fast)
	b := startInstance(t, env, "b", true, fast)
	rc := newReceiver(t)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var made []string
	refused := 0
	for i := range 2 * domain.MaxWebhooksPerOrg {
		in := a
		if i%2 == 1 {
			in = b
		}
		wg.Go(func() {
			w, _, err := in.del.Create(context.Background(), manager, "acme", webhooks.Spec{URL: ptr(rc.URL + "/hook")})
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				made = append(made, w.ID)
			case domain.ErrorCode(err) == domain.ECONFLICT:
				refused++
			default:
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if len(made) != domain.MaxWebhooksPerOrg || refused != domain.MaxWebhooksPerOrg {
		t.Fatalf("made %d, refused %d; the bound is %d", len(made), refused, domain.MaxWebhooksPerOrg)
	}
	if err := a.del.Delete(context.Background(), manager, "acme", made[0]); err != nil {
		t.Fatal(err)
	}
	if _, _, err := b.del.Create(context.Background(), manager, "acme", webhooks.Spec{URL: ptr(rc.URL + "/hook")}); err != nil {
		t.Errorf("after a delete: %v", err)
	}
	if _, _, err := b.del.Create(context.Background(), manager, "acme", webhooks.Spec{URL: ptr(rc.URL + "/hook")}); domain.ErrorCode(err) != domain.ECONFLICT {
		t.Errorf("past the bound again: %v", err)
	}
}

// During a rotation's grace both secrets sign: a receiver that still
// holds the old one and one that holds the new one both verify, with the
// Standard Webhooks library. After a rotation without grace the old one
// no longer verifies.
func TestRotationSignsWithBothSecretsDuringItsGrace(t *testing.T) {
	env := natstest.Start(t)
	in := startInstance(t, env, "a", true, fast)
	rc := newReceiver(t)
	wh := endpoint(t, in, rc)
	old := rc.secret
	_, fresh, err := in.del.RotateSecret(context.Background(), manager, "acme", wh.ID, time.Hour)
	if err != nil || !strings.HasPrefix(fresh, "whsec_") || fresh == old {
		t.Fatalf("rotate: %q %v", fresh, err)
	}
	waitUntil(t, 5*time.Second, "the registry holds the rotation", func() bool { w, _ := in.reg.Get("acme", wh.ID); return w.PreviousRef != "" })
	createKey(t, in, "with the old secret")
	rc.waitFor(t, 1, 10*time.Second)
	rc.mu.Lock()
	rc.secret = fresh
	rc.mu.Unlock()
	createKey(t, in, "with the new secret")
	rc.waitFor(t, 2, 10*time.Second)
	if _, _, err := in.del.RotateSecret(context.Background(), manager, "acme", wh.ID, 0); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, 5*time.Second, "the registry holds the second rotation", func() bool { w, _ := in.reg.Get("acme", wh.ID); return w.SecretMasked != webhooks.MaskSecret(fresh) })
	createKey(t, in, "with a replaced secret")
	waitUntil(t, 10*time.Second, "a delivery the replaced secret does not verify", func() bool { rc.mu.Lock(); defer rc.mu.Unlock(); return rc.bad > 0 })
	if _, _, err := in.del.RotateSecret(context.Background(), manager, "acme", wh.ID, 8*24*time.Hour); domain.ErrorCode(err) != domain.EINVALID {
		t.Errorf("a grace of 8 days: %v", err)
	}
}

// An update changes what an endpoint wants; a replay sends it again, in
// order, what it wants from a chosen instant; a test event and a manual
// redelivery reach it at once, verified, and are kept as manual attempts.
func TestUpdateReplayTestAndRedeliver(t *testing.T) {
	env := natstest.Start(t)
	in := startInstance(t, env, "a", true, fast)
	rc := newReceiver(t)
	wh := endpoint(t, in, rc)
	ctx := context.Background()
	if _, err := in.del.Update(ctx, manager, "acme", wh.ID, webhooks.Spec{EventTypes: ptr([]string{"KeyRevoked"})}); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, 5*time.Second, "the update applied", func() bool { w, _ := in.reg.Get("acme", wh.ID); return len(w.EventTypes) == 1 })
	start := time.Now()
	k := createKey(t, in, "one")
	if _, err := in.keys.Revoke(ctx, "acme", k, domain.RevokeKey{By: manager, Reason: "done"}); err != nil {
		t.Fatal(err)
	}
	got := rc.waitFor(t, 1, 10*time.Second)
	time.Sleep(300 * time.Millisecond)
	if got = rc.deliveries(); len(got) != 1 || got[0].Env.Type != "KeyRevoked" {
		t.Fatalf("subscribed to KeyRevoked, got %+v", got)
	}
	if _, err := in.del.Update(ctx, manager, "acme", wh.ID, webhooks.Spec{EventTypes: ptr([]string{})}); err != nil {
		t.Fatal(err)
	}
	if _, err := in.del.Replay(ctx, manager, "acme", wh.ID, start.Add(-time.Second)); err != nil {
		t.Fatal(err)
	}
	got = rc.waitFor(t, 3, 15*time.Second)
	if got[1].Env.Type != "KeyCreated" || got[2].Env.Type != "KeyRevoked" || got[2].ID != got[0].ID {
		t.Errorf("replayed: %+v", got)
	}
	if _, err := in.del.Replay(ctx, manager, "acme", wh.ID, time.Now().Add(time.Hour)); domain.ErrorCode(err) != domain.EINVALID {
		t.Errorf("a replay from the future: %v", err)
	}
	a, err := in.del.Test(ctx, manager, "acme", wh.ID)
	if err != nil || a.Result != "succeeded" || !a.Manual {
		t.Fatalf("test: %+v %v", a, err)
	}
	got = rc.waitFor(t, 4, 5*time.Second)
	if got[3].Env.Type != webhooks.TypeWebhookTest || got[3].Env.KeyID != wh.ID {
		t.Errorf("test event: %+v", got[3].Env)
	}
	var first webhooks.Attempt
	for _, at := range attempts(t, in, wh.ID) {
		if at.EventID == got[0].ID {
			first = at
		}
	}
	r, err := in.del.Redeliver(ctx, manager, "acme", wh.ID, first.ID)
	if err != nil || r.Result != "succeeded" || r.EventID != got[0].ID {
		t.Fatalf("redeliver: %+v %v", r, err)
	}
	if got = rc.waitFor(t, 5, 5*time.Second); got[4].ID != got[0].ID {
		t.Errorf("redelivered %s, want %s", got[4].ID, got[0].ID)
	}
	if _, err := in.del.Redeliver(ctx, manager, "acme", wh.ID, a.ID); domain.ErrorCode(err) != domain.ENOTFOUND {
		t.Errorf("redelivering a test event: %v", err)
	}
	other := endpoint(t, in, newReceiver(t))
	if _, err := in.del.Redeliver(ctx, manager, "acme", other.ID, first.ID); domain.ErrorCode(err) != domain.ENOTFOUND {
		t.Errorf("another endpoint's attempt: %v", err)
	}
}
