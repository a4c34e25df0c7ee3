package http_test

import (
	"context"
	"crypto/rand"
	"net/http/httptest"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/keyledger/keyledger/domain"
	"github.com/keyledger/keyledger/events"
	khttp "github.com/keyledger/keyledger/http"
	"github.com/keyledger/keyledger/internal/natstest"
	"github.com/keyledger/keyledger/projections"
)

// scrape reads /metrics as Prometheus does.
func (h *harness) scrape() map[string]*dto.MetricFamily {
	h.t.Helper()
	res := h.must(200, "GET", "/metrics", "", nil)
	if ct := res.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
		h.t.Errorf("/metrics Content-Type = %q", ct)
	}
	parser := expfmt.NewTextParser(model.LegacyValidation)
	families, err := parser.TextToMetricFamilies(strings.NewReader(string(res.body)))
	if err != nil {
		h.t.Fatalf("/metrics is not Prometheus text: %v\n%s", err, res.body)
	}
	return families
}

// value returns the value of the sample of family name whose labels are
// exactly labels (name, value pairs); the test fails if there is none.
func value(t *testing.T, families map[string]*dto.MetricFamily, name string, labels ...string) float64 {
	t.Helper()
	f, ok := families[name]
	if !ok {
		t.Errorf("no metric %s", name)
		return -1
	}
	want := map[string]string{}
	for i := 0; i+1 < len(labels); i += 2 {
		want[labels[i]] = labels[i+1]
	}
	for _, m := range f.GetMetric() {
		got := map[string]string{}
		for _, l := range m.GetLabel() {
			got[l.GetName()] = l.GetValue()
		}
		if len(got) != len(want) {
			continue
		}
		match := true
		for k, v := range want {
			match = match && got[k] == v
		}
		if !match {
			continue
		}
		switch {
		case m.Counter != nil:
			return m.Counter.GetValue()
		case m.Gauge != nil:
			return m.Gauge.GetValue()
		case m.Histogram != nil:
			return float64(m.Histogram.GetSampleCount())
		}
	}
	t.Errorf("no sample of %s with labels %v", name, want)
	return -1
}

func TestMetrics(t *testing.T) {
	var lost atomic.Bool
	lostSince := time.Now()
	var snaps *projections.Snapshotter
	const ahead = 90 * time.Second
	env := natstest.Start(t)
	h := instance(t, env, func(s *khttp.Server) {
		s.Version = "v1.2.3-test"
		s.Now = func() time.Time { return time.Now().Add(ahead) } // the snapshot below is that old
		s.Unreachable = func() time.Time {
			if lost.Load() {
				return lostSince
			}
			return time.Time{}
		}
		store, err := events.OpenSnapshots(context.Background(), env.JS, env.Store, 1)
		if err != nil {
			t.Fatal(err)
		}
		snaps = &projections.Snapshotter{Store: store, Table: s.Index.Table()}
		s.Snapshots = snaps
	})
	const org = "metrics-org"
	admin := h.bootstrap(org)

	// The workload: three creations (one by bootstrap), two rotations, two
	// revocations, one of them after an optimistic-concurrency conflict.
	var a, b issued
	h.must(201, "POST", "/v1/orgs/"+org+"/keys", admin, map[string]any{"name": "a"}).json(t, &a)
	h.must(201, "POST", "/v1/orgs/"+org+"/keys", admin, map[string]any{"name": "b"}).json(t, &b)
	var rotated issued
	h.must(200, "POST", "/v1/orgs/"+org+"/keys/"+a.Key.ID+"/rotate", admin, map[string]any{}).json(t, &rotated)
	h.must(204, "DELETE", "/v1/orgs/"+org+"/keys/"+b.Key.ID, admin, nil)
	h.must(404, "GET", "/v1/orgs/"+org+"/keys/key_01JZZZZZZZZZZZZZZZZZZZZZZZ", admin, nil)
	h.must(401, "GET", "/v1/orgs/"+org+"/keys", "", nil)
	h.must(404, "GET", "/no/such/route", "", nil)

	verify := func(key string, times int) {
		for range times {
			h.must(200, "POST", "/v1/verify", "", map[string]string{"key": key})
		}
	}
	verify(rotated.Secret, 2)
	verify(admin, 1)
	verify("c8k_not-a-key", 1)
	verify(b.Secret, 1) // revoked
	verify(a.Secret, 1) // replaced by the rotation, with no grace period
	unknown, err := domain.GenerateSecret("c8k", rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	verify(unknown, 1)
	h.conflictOnce(org, a.Key.ID)

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	last, err := h.env.Store.LastSeq(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := h.runner.WaitFor(ctx, last); err != nil {
		t.Fatal(err)
	}
	evs, err := h.env.Store.Load(context.Background(), org, a.Key.ID)
	if err != nil {
		t.Fatal(err)
	}
	if err := snaps.SaveNow(last, evs[len(evs)-1].Hash); err != nil {
		t.Fatal(err)
	}

	m := h.scrape()
	for _, c := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{"keyledger_build_info", []string{"version", "v1.2.3-test", "goversion", runtime.Version()}, 1},
		{"keyledger_events_appended_total", []string{"type", "KeyCreated"}, 3},
		{"keyledger_events_appended_total", []string{"type", "KeyRotated"}, 2},
		{"keyledger_events_appended_total", []string{"type", "KeyRevoked"}, 2},
		{"keyledger_append_conflicts_total", nil, 1},
		{"keyledger_append_retries_total", nil, 1},
		{"keyledger_verifications_total", []string{"result", "VALID"}, 3},
		{"keyledger_verifications_total", []string{"result", "MALFORMED"}, 1},
		{"keyledger_verifications_total", []string{"result", "NOT_FOUND"}, 1},
		{"keyledger_verifications_total", []string{"result", "REVOKED"}, 1},
		{"keyledger_verifications_total", []string{"result", "EXPIRED"}, 1},
		{"keyledger_http_requests_total", []string{"method", "POST", "route", "/v1/orgs/{org}/keys", "code", "201"}, 2},
		{"keyledger_http_requests_total", []string{"method", "POST", "route", "/v1/orgs/{org}/keys/{id}/rotate", "code", "200"}, 1},
		{"keyledger_http_requests_total", []string{"method", "DELETE", "route", "/v1/orgs/{org}/keys/{id}", "code", "204"}, 1},
		{"keyledger_http_requests_total", []string{"method", "GET", "route", "/v1/orgs/{org}/keys/{id}", "code", "404"}, 1},
		{"keyledger_http_requests_total", []string{"method", "GET", "route", "/v1/orgs/{org}/keys", "code", "401"}, 1},
		{"keyledger_http_requests_total", []string{"method", "GET", "route", "unmatched", "code", "404"}, 1},
		{"keyledger_http_requests_total", []string{"method", "POST", "route", "/v1/verify", "code", "200"}, 7},
		{"keyledger_http_request_duration_seconds", []string{"method", "POST", "route", "/v1/verify"}, 7},
		{"keyledger_projection_applied_seq", nil, float64(last)},
		{"keyledger_stream_last_seq", nil, float64(last)},
		{"keyledger_projection_lag_events", nil, 0},
		{"keyledger_projection_ready", nil, 1},
		{"keyledger_nats_connected", nil, 1},
		{"keyledger_snapshot_seq", nil, float64(last)},
	} {
		if got := value(t, m, c.name, c.labels...); got != c.want {
			t.Errorf("%s%v = %v, want %v", c.name, c.labels, got, c.want)
		}
	}
	if age := value(t, m, "keyledger_snapshot_age_seconds"); age < ahead.Seconds() || age > ahead.Seconds()+60 {
		t.Errorf("keyledger_snapshot_age_seconds = %v, want about %v", age, ahead.Seconds())
	}
	for _, name := range []string{"go_goroutines", "process_resident_memory_bytes"} {
		if _, ok := m[name]; !ok {
			t.Errorf("no %s: the Go and process collectors are missing", name)
		}
	}

	t.Run("NoLabelHoldsAKeyIdOrgIdOrSecret", func(t *testing.T) {
		forbidden := []string{org, a.Key.ID, b.Key.ID, a.Secret, b.Secret, rotated.Secret, admin, "key_"}
		keyShaped := regexp.MustCompile(`[a-z0-9]+_[0-9A-Za-z]{20,}`)
		for name, f := range h.scrape() {
			for _, s := range f.GetMetric() {
				for _, l := range s.GetLabel() {
					v := l.GetValue()
					for _, bad := range forbidden {
						if strings.Contains(v, bad) {
							t.Errorf("%s{%s=%q} holds %q", name, l.GetName(), v, bad)
						}
					}
					if keyShaped.MatchString(v) {
						t.Errorf("%s{%s=%q} holds something shaped like a key", name, l.GetName(), v)
					}
				}
			}
		}
	})

	t.Run("NATSStateFollowsTheConnection", func(t *testing.T) {
		lost.Store(true)
		defer lost.Store(false)
		if got := value(t, h.scrape(), "keyledger_nats_connected"); got != 0 {
			t.Errorf("keyledger_nats_connected = %v while NATS is lost, want 0", got)
		}
	})

	t.Run("HealthzNamesTheVersion", func(t *testing.T) {
		var body struct{ Status, Version string }
		h.must(200, "GET", "/healthz", "", nil).json(t, &body)
		if body.Version != "v1.2.3-test" {
			t.Errorf("/healthz version = %q", body.Version)
		}
	})
}

// conflictOnce revokes key id through the event store while, between the
// store's read of the key and its append, another change (a rotation)
// lands: the append conflicts once, and the revocation is decided again on
// the new state.
func (h *harness) conflictOnce(org, id string) {
	h.t.Helper()
	ctx := context.Background()
	actor := domain.Actor{Kind: domain.ActorSystem, ID: "test", Name: "metrics test"}
	first := true
	store := h.api.Keys.Store.(*events.Store) // the instance's own
	_, err := store.Update(ctx, org, id, func(k *domain.Key) ([]domain.Event, error) {
		if first {
			first = false
			if _, err := h.keys.Rotate(ctx, org, id, domain.RotateKey{By: domain.SystemPrincipal(actor.ID, actor.Name)}); err != nil {
				return nil, err
			}
		}
		e, err := k.DecideRevoke(domain.RevokeKey{Reason: "conflict test", By: domain.SystemPrincipal(actor.ID, actor.Name)}, time.Now())
		return []domain.Event{e}, err
	})
	if err != nil {
		h.t.Fatalf("revoke after a conflict: %v", err)
	}
}

func TestMetricsShowAProjectionBehind(t *testing.T) {
	env := natstest.Start(t)
	keys := &domain.Keys{Store: env.Store, MaxExpiry: time.Hour}
	for i := range 3 {
		if _, err := keys.Create(context.Background(), domain.CreateKey{
			OrgID: "lagging", Name: "k" + strconv.Itoa(i),
			By: domain.SystemPrincipal("test", "test"),
		}); err != nil {
			t.Fatal(err)
		}
	}
	// A runner that never runs: the projections hold nothing of the stream.
	listing, index := projections.NewListing(), projections.NewVerifyIndex()
	api := &khttp.Server{Keys: keys, Listing: listing, Index: index, Log: env.Store,
		Runner: projections.NewRunner(env.Store, natstest.Quiet(), listing, index), Logger: natstest.Quiet()}
	srv := httptest.NewServer(api.Handler())
	defer srv.Close()
	h := &harness{t: t, env: env, srv: srv}
	m := h.scrape()
	for name, want := range map[string]float64{
		"keyledger_projection_applied_seq": 0,
		"keyledger_stream_last_seq":        3,
		"keyledger_projection_lag_events":  3,
		"keyledger_projection_ready":       0,
	} {
		if got := value(t, m, name); got != want {
			t.Errorf("%s = %v, want %v", name, got, want)
		}
	}
	if _, ok := m["keyledger_snapshot_age_seconds"]; ok {
		t.Error("keyledger_snapshot_age_seconds is shown without any snapshot")
	}
}

func TestMetricsCountRefusalsBeforeRoutingUnderTheirRoute(t *testing.T) {
	var st stalledCreates
	h := startWith(t, t.TempDir(), func(s *khttp.Server) { s.MaxInFlight = 1; st.stall(s) })
	admin := h.bootstrap("acme")
	release := holdRequestSlot(t, h, &st, admin)
	h.must(503, "POST", "/v1/verify", "", map[string]string{"key": admin})
	release()
	if got := value(t, h.scrape(), "keyledger_http_requests_total", "method", "POST", "route", "/v1/verify", "code", "503"); got != 1 {
		t.Errorf("a verification refused by the in-flight bound counted %v times under /v1/verify, want 1", got)
	}
}
