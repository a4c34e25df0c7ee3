package http_test

import (
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"testing"
	"time"

	"github.com/keyledger/keyledger/events"
	khttp "github.com/keyledger/keyledger/http"
)

func TestKeysAsOf(t *testing.T) {
	clock := &fakeClock{t: t0}
	h := startWith(t, t.TempDir(), withClock(clock))
	admin := h.bootstrap("acme")
	k := h.create("acme", admin, map[string]any{"name": "audited"})
	clock.Set(t0.Add(time.Hour))
	rotated := h.rotate("acme", k.Key.ID, admin, nil)
	clock.Set(t0.Add(2 * time.Hour))
	h.must(http.StatusNoContent, "DELETE", "/v1/orgs/acme/keys/"+k.Key.ID, admin, nil)

	type keyAt struct {
		keyView
		Valid         bool
		LastChangedBy struct{ Kind, ID, Name string } `json:"last_changed_by"`
		LastChangedAt string                          `json:"last_changed_at"`
	}
	at := func(when time.Time) map[string]keyAt {
		var out struct{ Keys []keyAt }
		h.must(http.StatusOK, "GET", "/v1/orgs/acme/keys?as_of="+url.QueryEscape(when.Format(time.RFC3339Nano)), admin, nil).json(t, &out)
		m := map[string]keyAt{}
		for _, k := range out.Keys {
			m[k.ID] = k
		}
		return m
	}
	for _, tc := range []struct {
		name    string
		when    time.Time
		present bool
		masked  string
		status  string
		changed time.Time
	}{
		{"BeforeCreationItDidNotExist", t0.Add(-time.Nanosecond), false, "", "", time.Time{}},
		{"AfterCreationTheFirstValue", t0.Add(30 * time.Minute), true, k.Key.Masked, "active", t0},
		{"AtTheRotationTheNewValue", t0.Add(time.Hour), true, rotated.Key.Masked, "active", t0.Add(time.Hour)},
		{"AfterRevocationRevoked", t0.Add(3 * time.Hour), true, rotated.Key.Masked, "revoked", t0.Add(2 * time.Hour)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := at(tc.when)[k.Key.ID]
			if ok != tc.present {
				t.Fatalf("present = %v, want %v", ok, tc.present)
			}
			if !ok {
				return
			}
			if got.Masked != tc.masked || got.Status != tc.status || got.Valid != (tc.status == "active") ||
				got.LastChangedAt != events.FormatTime(tc.changed) || got.LastChangedBy.Name != "admin of acme" {
				t.Errorf("as of %s: %+v", tc.when, got)
			}
		})
	}
	h.must(http.StatusBadRequest, "GET", "/v1/orgs/acme/keys?as_of=yesterday", admin, nil)
}

func TestOrgEventsFilters(t *testing.T) {
	clock := &fakeClock{t: t0}
	h := startWith(t, t.TempDir(), withClock(clock))
	admin := h.bootstrap("acme")
	a := h.create("acme", admin, map[string]any{"name": "a"})
	clock.Set(t0.Add(time.Hour))
	b := h.create("acme", admin, map[string]any{"name": "b"})
	h.rotate("acme", a.Key.ID, admin, nil)
	h.request("POST", "/v1/orgs/acme/keys/"+b.Key.ID+"/rotate", a.Secret, nil) // refused: appends nothing
	person := h.create("acme", admin, map[string]any{"name": "second admin", "scopes": []string{"keys:manage"}})
	clock.Set(t0.Add(2 * time.Hour))
	h.rotate("acme", b.Key.ID, person.Secret, nil)

	count := func(query string) int {
		var out struct{ Events []eventView }
		h.must(http.StatusOK, "GET", "/v1/orgs/acme/events?"+query, admin, nil).json(t, &out)
		return len(out.Events)
	}
	for _, tc := range []struct {
		query string
		want  int
	}{
		{"", 6},
		{"type=KeyRotated", 2},
		{"type=KeyCreated,KeyRevoked", 4},
		{"key_id=" + b.Key.ID, 2},
		{"actor=" + person.Key.ID, 1},
		{"since=" + url.QueryEscape(t0.Add(time.Hour).Format(time.RFC3339)), 4},
		{"until=" + url.QueryEscape(t0.Add(time.Hour).Format(time.RFC3339)), 2},
		{fmt.Sprintf("type=KeyRotated&limit=1&after_seq=%d", a.Key.Version), 1},
	} {
		if got := count(tc.query); got != tc.want {
			t.Errorf("?%s: %d events, want %d", tc.query, got, tc.want)
		}
	}
	for _, bad := range []string{"type=KeyDeleted", "key_id=nope", "since=monday"} {
		h.must(http.StatusBadRequest, "GET", "/v1/orgs/acme/events?"+bad, admin, nil)
	}
}

func TestAuditPublicKeyIsPublished(t *testing.T) {
	h := start(t)
	pub := h.env.Signer.Public()
	res := h.must(http.StatusOK, "GET", "/v1/audit/pubkey", "", nil)
	got, err := events.ParsePublicKeyPEM(res.body)
	if err != nil || !got.Equal(pub) || res.Header.Get("X-Keyledger-Key-Id") != events.KeyID(pub) {
		t.Errorf("pubkey: %v %s", err, res.body)
	}
	res = h.must(http.StatusOK, "GET", "/v1/audit/signers", "", nil)
	if set, err := events.ParseSigners(res.body); err != nil || !slices.Equal(set.IDs(), []string{events.KeyID(pub)}) {
		t.Errorf("signers: %v %s", err, res.body)
	}
	none := startWith(t, t.TempDir(), func(s *khttp.Server) { s.Trust = nil })
	none.must(http.StatusNotFound, "GET", "/v1/audit/pubkey", "", nil)
	none.must(http.StatusNotFound, "GET", "/v1/audit/signers", "", nil)
}
