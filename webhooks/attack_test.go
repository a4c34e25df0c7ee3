package webhooks_test

import (
	"context"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/oklog/ulid/v2"

	"github.com/keyledger/keyledger/domain"
	"github.com/keyledger/keyledger/events"
	"github.com/keyledger/keyledger/internal/natstest"
	"github.com/keyledger/keyledger/webhooks"
)

// sealedOf returns how many messages the secrets bucket holds for
// endpoint id, values and markers alike: what it costs the shared bucket.
func sealedOf(t *testing.T, env *natstest.Env, id string) uint64 {
	t.Helper()
	s, err := env.JS.Stream(context.Background(), "KV_"+webhooks.SecretsBucket)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(context.Background(), jetstream.WithSubjectFilter("$KV."+webhooks.SecretsBucket+"."+id+".>"))
	if err != nil {
		t.Fatal(err)
	}
	var n uint64
	for _, c := range info.State.Subjects {
		n += c
	}
	return n
}

// Every URL an update replaced and every secret a rotation pushed out of
// its grace stayed sealed in the shared secrets bucket for ever, and a
// delete left them all behind (with a marker per reference it did
// forget): one manager patching a 2 KiB URL at the write limit filled
// the bucket's 64 MiB in hours, and then no endpoint of any org could be
// created, updated or rotated. An endpoint holds at most its URL, its
// secret and the previous one; a deleted one holds nothing.
func TestAttackWebhooksReplacedSealsAreForgotten(t *testing.T) {
	env := natstest.Start(t)
	in := startInstance(t, env, "a", true, fast)
	rc := newReceiver(t)
	wh := endpoint(t, in, rc)
	ctx := context.Background()
	long := rc.URL + "/hook/" + strings.Repeat("x", 1500)
	for i := range 5 {
		if _, err := in.del.Update(ctx, manager, "acme", wh.ID, webhooks.Spec{URL: ptr(long + string(rune('a'+i)))}); err != nil {
			t.Fatal(err)
		}
	}
	for range 4 {
		if _, _, err := in.del.RotateSecret(ctx, manager, "acme", wh.ID, time.Hour); err != nil {
			t.Fatal(err)
		}
	}
	if got := sealedOf(t, env, wh.ID); got > 3 {
		t.Errorf("after 5 updates and 4 rotations the bucket holds %d messages of the endpoint, want at most 3 (URL, secret, previous)", got)
	}
	// The endpoint still delivers, signed, to its newest URL.
	rc.mu.Lock()
	rc.secret = ""
	rc.mu.Unlock()
	_, fresh, err := in.del.RotateSecret(ctx, manager, "acme", wh.ID, 0)
	if err != nil {
		t.Fatal(err)
	}
	rc.mu.Lock()
	rc.secret = fresh
	rc.mu.Unlock()
	waitUntil(t, 5*time.Second, "the registry holds the rotation", func() bool {
		w, _ := in.reg.Get("acme", wh.ID)
		return w.SecretMasked == webhooks.MaskSecret(fresh)
	})
	if a, err := in.del.Test(ctx, manager, "acme", wh.ID); err != nil || a.Result != "succeeded" {
		t.Fatalf("test after the updates: %+v %v", a, err)
	}
	if err := in.del.Delete(ctx, manager, "acme", wh.ID); err != nil {
		t.Fatal(err)
	}
	if got := sealedOf(t, env, wh.ID); got != 0 {
		t.Errorf("a deleted endpoint leaves %d messages in the secrets bucket", got)
	}
}

// countingJS counts the consumer deletions a deliverer asks for.
type countingJS struct {
	jetstream.JetStream
	deletes atomic.Int64
}

func (c *countingJS) DeleteConsumer(ctx context.Context, stream, name string) error {
	c.deletes.Add(1)
	return c.JetStream.DeleteConsumer(ctx, stream, name)
}

// Each replay is a generation with a consumer of its own, and every
// instance retired them by walking every generation ever made: at each
// start one delete request per replay in the endpoint's life (a manager
// replaying at the write limit makes 86,400 a day), before any endpoint
// of any org got its worker, and the walk again, with a MAC per
// generation, at every change. A start retires only the last few.
func TestAttackWebhooksReplaysDoNotCostEveryStart(t *testing.T) {
	env := natstest.Start(t)
	a := startInstance(t, env, "a", true, fast)
	rc := newReceiver(t)
	wh := endpoint(t, a, rc)
	ctx := context.Background()
	const replays = 200
	for range replays {
		if _, err := a.del.Replay(ctx, manager, "acme", wh.ID, time.Now().Add(-time.Minute)); err != nil {
			t.Fatal(err)
		}
	}
	var js *countingJS
	b := startInstance(t, env, "b", true, fast, func(o *webhooks.Options) {
		js = &countingJS{JetStream: o.JS}
		o.JS = js
	})
	waitUntil(t, 10*time.Second, "b knows every replay", func() bool {
		w, _ := b.reg.Get("acme", wh.ID)
		return w.Generation == replays
	})
	waitUntil(t, 10*time.Second, "b retired the previous generation", func() bool { return js.deletes.Load() > 0 })
	time.Sleep(time.Second)
	if got := js.deletes.Load(); got > 16 {
		t.Errorf("a start asked for %d consumer deletions for one endpoint with %d replays", got, replays)
	}
	// It still delivers after the replays, once.
	createKey(t, a, "after the replays")
	rc.waitFor(t, 1, 10*time.Second)
}

// A receiver's Retry-After decided the next attempt alone: 18446744074
// seconds overflowed into 0.29 s, and 0 too was honoured, so the event
// was retried at once, again and again, and given up within a second
// instead of over the schedule. The schedule is
// a floor; Retry-After only ever waits longer, at most a day.
func TestAttackWebhooksRetryAfterCannotSkipTheSchedule(t *testing.T) {
	env := natstest.Start(t)
	schedule := []time.Duration{3 * time.Second, 3 * time.Second, 3 * time.Second}
	in := startInstance(t, env, "a", true, schedule)
	for _, ra := range []string{"18446744074", "0", "9223372037"} {
		t.Run(ra, func(t *testing.T) {
			rc := newReceiver(t)
			rc.status = func(int) (int, http.Header) { return 503, http.Header{"Retry-After": {ra}} }
			wh := endpoint(t, in, rc)
			defer func() { _ = in.del.Delete(context.Background(), manager, "acme", wh.ID) }()
			createKey(t, in, "retry after "+ra)
			waitUntil(t, 10*time.Second, "a first attempt", func() bool { return len(attempts(t, in, wh.ID)) > 0 })
			time.Sleep(1500 * time.Millisecond)
			atts := attempts(t, in, wh.ID)
			if len(atts) != 1 {
				t.Fatalf("%d attempts within 1.5 s of the first, on a schedule of 3 s: %+v", len(atts), atts)
			}
			at, _ := time.Parse(time.RFC3339Nano, atts[0].At)
			next, err := time.Parse(time.RFC3339Nano, atts[0].NextAt)
			if err != nil || next.Sub(at) < 2*time.Second || next.Sub(at) > 24*time.Hour+time.Minute {
				t.Errorf("next attempt at %q, %s after the first", atts[0].NextAt, next.Sub(at))
			}
		})
	}
}

// A delivery refused by the address policy, or one whose name does not
// resolve, said where: the address the name resolved to ("dial tcp
// 10.0.3.7:443: … 10.0.3.7 is a private address") and the instance's
// own resolver ("lookup x on 10.0.0.2:53"). A manager could map the
// internal network by naming hosts in endpoint URLs and reading the
// attempts. The attempt says why, not where.
func TestAttackWebhooksAttemptsDoNotMapTheInternalNetwork(t *testing.T) {
	env := natstest.Start(t)
	in := startInstance(t, env, "a", false, fast)
	rc := newReceiver(t)
	ctx := context.Background()
	_, port, _ := net.SplitHostPort(strings.TrimPrefix(rc.URL, "http://"))
	for _, c := range []struct {
		url, want string
		not       []string
	}{
		{"http://localhost:" + port + "/hook", "loopback", []string{"127.0.0.1", "::1"}},
		{"http://keyledger-attack-test.invalid/hook", "lookup", []string{":53", "10.", "127.0.0."}},
	} {
		wh := endpointAt(t, in, rc, c.url)
		a, err := in.del.Test(ctx, manager, "acme", wh.ID)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(a.Error, c.want) {
			t.Errorf("%s: error %q does not say %q", c.url, a.Error, c.want)
		}
		for _, s := range c.not {
			if strings.Contains(a.Error, s) {
				t.Errorf("%s: error %q holds %q", c.url, a.Error, s)
			}
		}
	}
	rc.mu.Lock()
	defer rc.mu.Unlock()
	if rc.received+rc.bad != 0 {
		t.Errorf("the loopback receiver was reached %d times", rc.received+rc.bad)
	}
}

// Cloud host services no receiver is ever at were reachable: Azure's
// WireServer, on a public address, even without private addresses, and
// Google's IPv6 metadata server, Oracle's and Tencent's metadata with
// them. They are refused in every form, like 169.254.169.254.
func TestAttackWebhooksEveryCloudMetadataAddressIsRefused(t *testing.T) {
	for _, ip := range []string{
		"168.63.129.16", "::ffff:168.63.129.16", "64:ff9b::a83f:8110", // Azure WireServer
		"fd20:ce::254",  // Google Cloud, IPv6
		"192.0.0.192",   // Oracle Cloud
		"169.254.0.23",  // Tencent Cloud
		"fd00:ec2::254", // AWS, IPv6
	} {
		for _, private := range []bool{false, true} {
			if got := domain.RefusedAddress(net.ParseIP(ip), private); got != "metadata" {
				t.Errorf("%s (private allowed: %v): %q, want metadata", ip, private, got)
			}
		}
	}
	if _, err := domain.ValidateWebhookURL("https://168.63.129.16/machine", false, false); err == nil {
		t.Error("an endpoint at Azure's WireServer is accepted")
	}
}

// Someone with the service credential publishes endpoint events on an
// endpoint's subject: an unsigned WebhookDisabled and WebhookUpdated
// (narrowing it to nothing a SIEM needs) chained after its last event, an
// unsigned WebhookCreated naming its sealed URL under a new id, and a
// copy of the endpoint's own signed WebhookDisabled after it was enabled
// again. No registry, running or started afresh, takes any of them, and
// the endpoint goes on delivering.
func TestAttackWebhooksForgedEndpointEventsChangeNothing(t *testing.T) {
	env := natstest.Start(t)
	in := startInstance(t, env, "a", true, fast)
	rc := newReceiver(t)
	wh := endpoint(t, in, rc)
	ctx := context.Background()
	if _, err := in.del.Disable(ctx, manager, "acme", wh.ID, "paused"); err != nil {
		t.Fatal(err)
	}
	raw, err := env.JS.Stream(ctx, events.StreamName)
	if err != nil {
		t.Fatal(err)
	}
	subject := events.Subject("acme", wh.ID, domain.TypeWebhookDisabled)
	genuine, err := raw.GetLastMsgForSubject(ctx, subject)
	if err != nil {
		t.Fatal(err)
	}
	enabled, err := in.del.Enable(ctx, manager, "acme", wh.ID)
	if err != nil {
		t.Fatal(err)
	}
	forge := func(typ domain.EventType, id, data string) {
		t.Helper()
		body := `{"event_id":"` + ulid.Make().String() + `","type":"` + string(typ) + `","schema_version":1,"org_id":"acme","key_id":"` + id +
			`","occurred_at":"` + events.FormatTime(time.Now()) + `","actor":{"kind":"user","id":"x","name":"x"},"prev_hash":"` + enabled.LastHash + `","data":` + data + `}`
		if _, err := env.JS.Publish(ctx, events.Subject("acme", id, typ), []byte(body)); err != nil {
			t.Fatal(err)
		}
	}
	forge(domain.TypeWebhookDisabled, wh.ID, `{"reason":"forged"}`)
	forge(domain.TypeWebhookUpdated, wh.ID, `{"url_masked":"x","url_ref":"`+wh.URLRef+`","description":"","event_types":["KeyLeakReported"]}`)
	ghost := domain.NewWebhookID()
	forge(domain.TypeWebhookCreated, ghost, `{"url_masked":"x","url_ref":"`+wh.URLRef+`","description":"","event_types":[],"secret_ref":"`+wh.SecretRef+`","secret_masked":"x"}`)
	copied := nats.Header{}
	for k, v := range genuine.Header {
		if !strings.HasPrefix(k, "Nats-") { // its signature, not its append's expectations
			copied[k] = v
		}
	}
	if _, err := env.JS.PublishMsg(ctx, &nats.Msg{Subject: subject, Header: copied, Data: genuine.Data}); err != nil {
		t.Fatal(err)
	}
	createKey(t, in, "after the forgeries")
	rc.waitFor(t, 1, 10*time.Second)
	fresh := webhooks.NewRegistry()
	if err := fresh.Prime(ctx, in.store.EachWebhookEvent); err != nil {
		t.Fatal(err)
	}
	for name, reg := range map[string]*webhooks.Registry{"running": in.reg, "fresh": fresh} {
		w, _ := reg.Get("acme", wh.ID)
		if w.Disabled || len(w.EventTypes) != 0 || w.Version != enabled.Version {
			t.Errorf("%s registry: disabled %v (%q), event types %v, version %d, want %d", name, w.Disabled, w.DisabledWhy, w.EventTypes, w.Version, enabled.Version)
		}
		if _, ok := reg.Get("acme", ghost); ok {
			t.Errorf("%s registry holds the forged endpoint", name)
		}
	}
	if _, err := in.del.Get("acme", ghost); domain.ErrorCode(err) != domain.ENOTFOUND {
		t.Errorf("the forged endpoint: %v", err)
	}
	if got := sealedOf(t, env, ghost); got != 0 {
		t.Errorf("the forged endpoint has %d sealed entries", got)
	}
	// The junk on its subjects does not stop its manager's next change.
	if w, err := in.del.Disable(ctx, manager, "acme", wh.ID, "for real"); err != nil || !w.Disabled {
		t.Errorf("disable after the forgeries: %+v %v", w, err)
	}
}
