package http_test

import (
	"context"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/keyledger/keyledger/events"
	khttp "github.com/keyledger/keyledger/http"
	"github.com/keyledger/keyledger/internal/natstest"
	"github.com/keyledger/keyledger/usage"
)

// fakeClock is the time every boundary test sets by hand: no sleeping.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = t
}

func withClock(c *fakeClock) func(*khttp.Server) {
	return func(s *khttp.Server) {
		s.Now = c.Now
		s.Keys.Now = c.Now
	}
}

var t0 = time.Date(2026, 11, 27, 9, 0, 0, 0, time.UTC)

func TestGracePeriodBoundary(t *testing.T) {
	clock := &fakeClock{t: t0}
	h := startWith(t, t.TempDir(), withClock(clock))
	admin := h.bootstrap("acme")
	k := h.create("acme", admin, map[string]any{"name": "svc"})
	rotated := h.rotate("acme", k.Key.ID, admin, map[string]any{"grace_period_seconds": 3600})
	end := t0.Add(time.Hour)

	clock.Set(end.Add(-time.Nanosecond))
	got := h.verify(k.Secret)
	if !got.Valid || !got.Deprecated || got.ExpiresAt == nil || *got.ExpiresAt != events.FormatTime(end) {
		t.Errorf("1ns before the grace end: %+v, want VALID deprecated until %s", got, end)
	}
	h.must(http.StatusOK, "GET", "/v1/whoami", k.Secret, nil)

	for _, at := range []time.Time{end.Add(-time.Nanosecond), end, end.Add(time.Nanosecond)} {
		clock.Set(at)
		if v := h.list("acme", admin, "?status=all"); v[0].ID != k.Key.ID || v[0].Status != "active" {
			t.Errorf("at %s: listing %+v, want the key active: a grace period is not an expiry", at.Sub(end), v[0])
		}
	}
	for _, at := range []time.Time{end, end.Add(time.Nanosecond)} {
		clock.Set(at)
		if got := h.verify(k.Secret); got.Valid || got.Code != "EXPIRED" {
			t.Errorf("at %s: old secret %+v, want EXPIRED", at.Sub(end), got)
		}
		h.must(http.StatusUnauthorized, "GET", "/v1/whoami", k.Secret, nil)
		if got := h.verify(rotated.Secret); !got.Valid || got.Deprecated {
			t.Errorf("at %s: new secret %+v, want VALID", at.Sub(end), got)
		}
	}

	t.Run("RotatingAgainEndsTheOlderSecretAtOnce", func(t *testing.T) {
		clock.Set(t0.Add(10 * time.Minute))
		k := h.create("acme", admin, map[string]any{"name": "twice"})
		second := h.rotate("acme", k.Key.ID, admin, map[string]any{"grace_period_seconds": 3600})
		h.rotate("acme", k.Key.ID, admin, map[string]any{"grace_period_seconds": 3600})
		if got := h.verify(k.Secret); got.Code != "EXPIRED" {
			t.Errorf("first secret after two grace rotations: %+v, want EXPIRED", got)
		}
		if got := h.verify(second.Secret); !got.Deprecated {
			t.Errorf("second secret: %+v, want VALID deprecated", got)
		}
	})
}

func TestExpiryBoundary(t *testing.T) {
	clock := &fakeClock{t: t0}
	h := startWith(t, t.TempDir(), withClock(clock))
	admin := h.bootstrap("acme")
	expiry := t0.Add(2 * time.Hour)
	body := map[string]any{"name": "short-lived", "expires_at": expiry.Format(time.RFC3339Nano)}
	k := h.create("acme", admin, body)
	other := h.create("acme", admin, body)
	late := h.create("acme", admin, map[string]any{"name": "later", "expires_at": t0.Add(30 * 24 * time.Hour).Format(time.RFC3339)})
	status := func(id string) string {
		for _, v := range h.list("acme", admin, "?status=all") {
			if v.ID == id {
				return v.Status
			}
		}
		return "missing"
	}

	clock.Set(expiry.Add(-time.Nanosecond))
	if got := h.verify(k.Secret); !got.Valid {
		t.Errorf("1ns before expiry: %+v, want VALID", got)
	}
	h.must(http.StatusOK, "GET", "/v1/whoami", k.Secret, nil)
	if got := status(k.Key.ID); got != "active" {
		t.Errorf("1ns before expiry: status %s, want active", got)
	}
	soon := ids(h.list("acme", admin, "?expiring_within=7d"))
	if len(soon) != 2 || soon[0] != other.Key.ID || soon[1] != k.Key.ID {
		t.Errorf("expiring within 7d = %v, want the two short-lived keys (not %s)", soon, late.Key.ID)
	}
	h.rotate("acme", other.Key.ID, admin, nil)

	for _, at := range []time.Time{expiry, expiry.Add(time.Nanosecond)} {
		clock.Set(at)
		if got := h.verify(k.Secret); got.Valid || got.Code != "EXPIRED" {
			t.Errorf("at expiry%+v: %+v, want EXPIRED", at.Sub(expiry), got)
		}
		h.must(http.StatusUnauthorized, "GET", "/v1/whoami", k.Secret, nil)
		if got := status(k.Key.ID); got != "expired" {
			t.Errorf("at expiry%+v: status %s, want expired", at.Sub(expiry), got)
		}
		before := h.env.LastSeq(t)
		res := h.must(http.StatusConflict, "POST", "/v1/orgs/acme/keys/"+k.Key.ID+"/rotate", admin, nil)
		if res.errorCode() != "conflict" || h.env.LastSeq(t) != before {
			t.Errorf("rotating an expired key: %s", res.body)
		}
	}
	if got := ids(h.list("acme", admin, "?expiring_within=7d")); len(got) != 0 {
		t.Errorf("expired keys are not expiring soon: %v", got)
	}
	h.must(http.StatusBadRequest, "GET", "/v1/orgs/acme/keys?expiring_within=soon", admin, nil)
}

func TestMaximumExpiry(t *testing.T) {
	clock := &fakeClock{t: t0}
	h := startWith(t, t.TempDir(), withClock(clock))
	admin := h.bootstrap("acme")
	h.create("acme", admin, map[string]any{"name": "a year", "expires_at": t0.Add(365 * 24 * time.Hour).Format(time.RFC3339)})
	h.must(http.StatusBadRequest, "POST", "/v1/orgs/acme/keys", admin, map[string]any{"name": "too long", "expires_at": t0.Add(366 * 24 * time.Hour).Format(time.RFC3339)})
}

// TestUsageIsNotAnEventAndIsShared verifies one key 10,000 times: the
// audit stream does not move, and a second instance shows the use after
// the first flushes.
func TestUsageIsNotAnEventAndIsShared(t *testing.T) {
	env := natstest.Start(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sink, err := events.OpenUsage(ctx, env.JS, 1, nil) // B's
	if err != nil {
		t.Fatal(err)
	}
	sinkA, err := events.OpenUsage(ctx, env.JS, 1, nil) // each instance has its own
	if err != nil {
		t.Fatal(err)
	}
	usageA, usageB := usage.New(), usage.New()
	a := instance(t, env, func(s *khttp.Server) { s.Usage = usageA })
	b := instance(t, env, func(s *khttp.Server) { s.Usage = usageB })
	go usageB.Run(ctx, sink, time.Hour, natstest.Quiet()) // B only watches here

	admin := a.bootstrap("acme")
	k := a.create("acme", admin, map[string]any{"name": "busy"})
	if err := b.runner.WaitFor(ctx, k.Key.Version); err != nil {
		t.Fatal(err)
	}
	before := env.LastSeq(t)
	start := time.Now()
	for range 10000 {
		a.must(http.StatusOK, "POST", "/v1/verify", "", map[string]string{"key": k.Secret})
	}
	if after := env.LastSeq(t); after != before {
		t.Fatalf("10,000 verifications moved the audit stream from %d to %d", before, after)
	}
	// The uses happened at start or later: a minute boundary may pass meanwhile.
	minute := events.FormatTime(start.UTC().Truncate(time.Minute))
	var here struct {
		LastUsedAt *string `json:"last_used_at"`
	}
	a.must(http.StatusOK, "GET", "/v1/orgs/acme/keys/"+k.Key.ID, admin, nil).json(t, &here)
	if here.LastUsedAt == nil || *here.LastUsedAt < minute {
		t.Errorf("instance A: last_used_at %v, want the minute %s", here.LastUsedAt, minute)
	}

	if _, err := usageA.Flush(ctx, sinkA); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		var got struct {
			LastUsedAt *string `json:"last_used_at"`
		}
		b.must(http.StatusOK, "GET", "/v1/orgs/acme/keys/"+k.Key.ID, admin, nil).json(t, &got)
		if got.LastUsedAt != nil {
			if *got.LastUsedAt < minute {
				t.Errorf("instance B: last_used_at %s, want the minute %s or later", *got.LastUsedAt, minute)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("instance B never showed last_used_at")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if after := env.LastSeq(t); after != before {
		t.Errorf("the flush moved the audit stream from %d to %d", before, after)
	}
	t.Logf("10,000 verifications over HTTP in %s", time.Since(start).Round(time.Millisecond))
}
