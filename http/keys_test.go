package http_test

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/keyledger/keyledger/domain"
	khttp "github.com/keyledger/keyledger/http"
	"github.com/keyledger/keyledger/internal/natstest"
	"github.com/keyledger/keyledger/projections"
)

func ids(keys []keyView) []string {
	out := make([]string, len(keys))
	for i, k := range keys {
		out[i] = k.ID
	}
	return out
}

func TestLifecycle(t *testing.T) {
	h := start(t)
	admin := h.bootstrap("acme")

	created := h.create("acme", admin, map[string]any{"name": "  billing worker ", "scopes": []string{"invoices:read"}})
	k := created.Key
	t.Run("CreateShowsTheFullKeyOnce", func(t *testing.T) {
		if !domain.WellFormed(created.Secret) || !strings.HasPrefix(created.Secret, "c8k_") {
			t.Fatalf("secret %q is not a well-formed c8k key", created.Secret)
		}
		if got, want := k.Masked, "c8k_****"+created.Secret[len(created.Secret)-4:]; got != want {
			t.Errorf("masked = %q, want %q", got, want)
		}
		if got, want := k.Name, "billing worker"; got != want {
			t.Errorf("name = %q, want %q (trimmed)", got, want)
		}
		if got, want := k.CreatedBy.Kind, domain.ActorKey; got != want {
			t.Errorf("created_by.kind = %q, want %q", got, want)
		}
		if k.Status != "active" || k.Version == 0 {
			t.Errorf("status %q version %d, want active and a version", k.Status, k.Version)
		}
	})

	t.Run("ReadsAfterTheWriteShowIt", func(t *testing.T) {
		got := h.must(http.StatusOK, "GET", "/v1/orgs/acme/keys/"+k.ID, admin, nil)
		if etag, want := got.Header.Get("ETag"), `"`+strconv.FormatUint(k.Version, 10)+`"`; etag != want {
			t.Errorf("ETag = %s, want %s", etag, want)
		}
		if !slices.Contains(ids(h.list("acme", admin, "")), k.ID) {
			t.Error("listing does not show the new key")
		}
		for _, path := range []string{"/v1/orgs/acme/keys/" + k.ID, "/v1/orgs/acme/keys", "/v1/orgs/acme/keys/" + k.ID + "/events", "/v1/orgs/acme/events"} {
			if res := h.must(http.StatusOK, "GET", path, admin, nil); strings.Contains(string(res.body), created.Secret) {
				t.Errorf("GET %s shows the full key", path)
			}
		}
		if v := h.verify(created.Secret); !v.Valid || v.Code != "VALID" || *v.KeyID != k.ID || *v.OrgID != "acme" {
			t.Errorf("verify new key = %+v, want VALID for %s", v, k.ID)
		}
		var who keyView
		h.must(http.StatusOK, "GET", "/v1/whoami", created.Secret, nil).json(t, &who)
		if who.ID != k.ID {
			t.Errorf("whoami = %s, want %s", who.ID, k.ID)
		}
	})

	rotated := h.rotate("acme", k.ID, admin, nil)
	t.Run("RotationWithoutGraceEndsTheOldSecret", func(t *testing.T) {
		if rotated.Secret == created.Secret || !domain.WellFormed(rotated.Secret) {
			t.Fatalf("rotation gave %q", rotated.Secret)
		}
		if got := h.verify(created.Secret); got.Valid || got.Code != "EXPIRED" {
			t.Errorf("old secret = %+v, want EXPIRED", got)
		}
		if got := h.verify(rotated.Secret); !got.Valid || got.Code != "VALID" || got.Deprecated {
			t.Errorf("new secret = %+v, want VALID", got)
		}
		h.must(http.StatusUnauthorized, "GET", "/v1/whoami", created.Secret, nil)
		if rotated.Key.RotatedAt == nil || rotated.Key.Masked == k.Masked {
			t.Errorf("rotated view = %+v, want rotated_at and a new mask", rotated.Key)
		}
	})

	t.Run("RotationWithGraceKeepsTheOldSecretDeprecated", func(t *testing.T) {
		again := h.rotate("acme", k.ID, admin, map[string]any{"grace_period_seconds": 3600})
		got := h.verify(rotated.Secret)
		if !got.Valid || !got.Deprecated || got.ExpiresAt == nil {
			t.Errorf("secret in grace = %+v, want VALID deprecated with expires_at", got)
		}
		rotated = again
	})

	h.must(http.StatusNoContent, "DELETE", "/v1/orgs/acme/keys/"+k.ID, admin, map[string]string{"reason": "leaked in a log"})
	t.Run("RevocationEndsEverySecret", func(t *testing.T) {
		for _, s := range []string{created.Secret, rotated.Secret} {
			if got := h.verify(s); got.Valid || got.Code != "REVOKED" {
				t.Errorf("verify after revoke = %+v, want REVOKED", got)
			}
			h.must(http.StatusUnauthorized, "GET", "/v1/whoami", s, nil)
		}
		if slices.Contains(ids(h.list("acme", admin, "")), k.ID) {
			t.Error("default listing shows a revoked key")
		}
		all := h.list("acme", admin, "?status=all")
		i := slices.Index(ids(all), k.ID)
		if i < 0 || all[i].Status != "revoked" || all[i].RevokedAt == nil {
			t.Errorf("?status=all = %+v, want the key revoked", all)
		}
		res := h.must(http.StatusConflict, "DELETE", "/v1/orgs/acme/keys/"+k.ID, admin, nil)
		if got, want := res.errorCode(), "key_revoked"; got != want {
			t.Errorf("second revoke code = %q, want %q", got, want)
		}
		res = h.must(http.StatusConflict, "POST", "/v1/orgs/acme/keys/"+k.ID+"/rotate", admin, nil)
		if got, want := res.errorCode(), "key_revoked"; got != want {
			t.Errorf("rotate of revoked key code = %q, want %q", got, want)
		}
	})

	t.Run("HistoryShowsEachChangeInOrderWithActorAndTime", func(t *testing.T) {
		evs := h.history("acme", k.ID, admin)
		var types []string
		for i, e := range evs {
			types = append(types, e.Type)
			if e.Actor.Kind != domain.ActorKey || e.Actor.Name != "admin of acme" || e.Actor.ID == "" {
				t.Errorf("event %d actor = %+v, want the admin key", i, e.Actor)
			}
			if _, err := time.Parse(time.RFC3339Nano, e.OccurredAt); err != nil {
				t.Errorf("event %d occurred_at %q: %v", i, e.OccurredAt, err)
			}
			if i > 0 && (e.Seq <= evs[i-1].Seq || e.OccurredAt < evs[i-1].OccurredAt) {
				t.Errorf("event %d is out of order", i)
			}
		}
		if got, want := fmt.Sprint(types), "[KeyCreated KeyRotated KeyRotated KeyRevoked]"; got != want {
			t.Errorf("history = %s, want %s", got, want)
		}
		if !strings.Contains(string(evs[3].Data), "leaked in a log") {
			t.Errorf("revocation data = %s, want the reason", evs[3].Data)
		}
	})

	t.Run("UnknownKeyIsNotFound", func(t *testing.T) {
		unknown := domain.NewKeyID()
		for _, r := range []struct{ method, path string }{
			{"GET", "/v1/orgs/acme/keys/" + unknown},
			{"GET", "/v1/orgs/acme/keys/" + unknown + "/events"},
			{"POST", "/v1/orgs/acme/keys/" + unknown + "/rotate"},
			{"DELETE", "/v1/orgs/acme/keys/" + unknown},
		} {
			if res := h.request(r.method, r.path, admin, nil); res.StatusCode != http.StatusNotFound || res.errorCode() != "not_found" {
				t.Errorf("%s %s = %d %s, want 404 not_found", r.method, r.path, res.StatusCode, res.body)
			}
		}
	})
}

func TestVerify(t *testing.T) {
	h := start(t)
	admin := h.bootstrap("acme")
	k := h.create("acme", admin, map[string]any{"name": "svc"})
	flipped := []byte(k.Secret)
	flipped[len(flipped)-1] ^= 1
	unknown, err := domain.GenerateSecret("c8k", nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ name, key, code string }{
		{"BadChecksumIsMalformed", string(flipped), "MALFORMED"},
		{"EmptyIsMalformed", "", "MALFORMED"},
		{"VeryLongIsMalformed", strings.Repeat("a", 100000), "MALFORMED"},
		{"UnknownIsNotFound", unknown, "NOT_FOUND"},
		{"CurrentIsValid", k.Secret, "VALID"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.code == "MALFORMED" && len(tc.key) > 60000 {
				res := h.must(http.StatusRequestEntityTooLarge, "POST", "/v1/verify", "", map[string]string{"key": tc.key})
				if res.errorCode() != "too_large" {
					t.Errorf("code = %s", res.body)
				}
				return
			}
			got := h.verify(tc.key)
			if got.Code != tc.code || got.Valid != (tc.code == "VALID") {
				t.Errorf("verify = %+v, want %s", got, tc.code)
			}
		})
	}
	t.Run("WhoamiWithoutKeyIsUnauthenticated", func(t *testing.T) {
		res := h.must(http.StatusUnauthorized, "GET", "/v1/whoami", "", nil)
		if res.errorCode() != "unauthenticated" || res.Header.Get("WWW-Authenticate") == "" {
			t.Errorf("whoami without key = %s %v", res.body, res.Header)
		}
	})
}

func TestListingPagination(t *testing.T) {
	h := start(t)
	admin := h.bootstrap("acme")
	var want []string
	for i := range 7 {
		want = append(want, h.create("acme", admin, map[string]any{"name": fmt.Sprint("key ", i)}).Key.ID)
	}
	slices.Reverse(want) // newest first; the admin key, created first, comes last
	var got []string
	cursor := ""
	for pages := 0; pages < 10; pages++ {
		var page struct {
			Keys       []keyView
			NextCursor string `json:"next_cursor"`
		}
		h.must(http.StatusOK, "GET", "/v1/orgs/acme/keys?limit=3&cursor="+cursor, admin, nil).json(t, &page)
		got = append(got, ids(page.Keys)...)
		if cursor = page.NextCursor; cursor == "" {
			break
		}
	}
	if len(got) != 8 || !slices.Equal(got[:7], want[:7]) {
		t.Errorf("pages = %v, want newest first %v and the admin key", got, want[:7])
	}
}

func TestConditionalAndIdempotentWrites(t *testing.T) {
	h := start(t)
	admin := h.bootstrap("acme")
	k := h.create("acme", admin, map[string]any{"name": "svc"}).Key

	t.Run("StaleIfMatchIsPreconditionFailed", func(t *testing.T) {
		stale := fmt.Sprintf(`"%d"`, k.Version)
		fresh := h.rotate("acme", k.ID, admin, nil)
		before := h.env.LastSeq(t)
		res := h.must(http.StatusPreconditionFailed, "DELETE", "/v1/orgs/acme/keys/"+k.ID, admin, nil, "If-Match", stale)
		if res.errorCode() != "precondition_failed" || h.env.LastSeq(t) != before {
			t.Errorf("stale If-Match: %s, seq moved %v", res.body, h.env.LastSeq(t) != before)
		}
		h.must(http.StatusNoContent, "DELETE", "/v1/orgs/acme/keys/"+k.ID, admin, nil, "If-Match", fmt.Sprintf(`"%d"`, fresh.Key.Version))
	})

	t.Run("RepeatedIdempotencyKeyCreatesOnce", func(t *testing.T) {
		body := map[string]any{"name": "ci deploy"}
		first := h.must(http.StatusCreated, "POST", "/v1/orgs/acme/keys", admin, body, "Idempotency-Key", "create-ci-1")
		seq := h.env.LastSeq(t)
		again := h.must(http.StatusCreated, "POST", "/v1/orgs/acme/keys", admin, body, "Idempotency-Key", "create-ci-1")
		if string(first.body) != string(again.body) || again.Header.Get("Idempotent-Replayed") != "true" {
			t.Errorf("replay differs:\n%s\n%s", first.body, again.body)
		}
		if h.env.LastSeq(t) != seq {
			t.Error("the replay appended an event")
		}
		res := h.must(http.StatusConflict, "POST", "/v1/orgs/acme/keys", admin, map[string]any{"name": "other"}, "Idempotency-Key", "create-ci-1")
		if res.errorCode() != "conflict" {
			t.Errorf("reuse with another body: %s", res.body)
		}
	})

	t.Run("MinSeqWaitsForTheSequence", func(t *testing.T) {
		seq := h.env.LastSeq(t)
		h.must(http.StatusOK, "GET", fmt.Sprintf("/v1/orgs/acme/keys?min_seq=%d", seq), admin, nil)
		// A sequence the stream does not hold would never come: 400 at
		// once, not a wait (TestAttackMinSeqBeyondTheStream).
		res := h.must(http.StatusBadRequest, "GET", fmt.Sprintf("/v1/orgs/acme/keys?min_seq=%d", seq+1000), admin, nil)
		if res.errorCode() != "invalid" {
			t.Errorf("min_seq beyond the stream: %s", res.body)
		}
	})
}

func TestOrgEventsPageInStreamOrder(t *testing.T) {
	h := start(t)
	admin := h.bootstrap("acme")
	other := h.bootstrap("globex")
	for i := range 3 {
		k := h.create("acme", admin, map[string]any{"name": fmt.Sprint("k", i)})
		h.rotate("acme", k.Key.ID, admin, nil)
		h.create("globex", other, map[string]any{"name": "not acme's"})
	}
	var all []eventView
	after := uint64(0)
	for pages := 0; pages < 10; pages++ {
		var page struct {
			Events []eventView
			Next   uint64 `json:"next_after_seq"`
		}
		h.must(http.StatusOK, "GET", fmt.Sprintf("/v1/orgs/acme/events?limit=2&after_seq=%d", after), admin, nil).json(t, &page)
		if len(page.Events) == 0 {
			if page.Next != after {
				t.Errorf("empty page moved next_after_seq from %d to %d", after, page.Next)
			}
			break
		}
		all = append(all, page.Events...)
		after = page.Next
	}
	if got, want := len(all), 7; got != want { // bootstrap + 3 × (create, rotate)
		t.Fatalf("%d events, want %d", got, want)
	}
	for i, e := range all {
		if e.OrgID != "acme" || (i > 0 && e.Seq <= all[i-1].Seq) {
			t.Errorf("event %d: org %s seq %d, want acme's events in stream order", i, e.OrgID, e.Seq)
		}
	}
}

func TestRotateAcceptsAnEmptyJSONRequest(t *testing.T) {
	h := start(t)
	admin := h.bootstrap("acme")
	k := h.create("acme", admin, map[string]any{"name": "svc"}).Key
	h.must(http.StatusOK, "POST", "/v1/orgs/acme/keys/"+k.ID+"/rotate", admin, "")
	h.must(http.StatusOK, "POST", "/v1/orgs/acme/keys/"+k.ID+"/rotate", admin, "{}")
}

func TestHealthAndReadiness(t *testing.T) {
	h := start(t)
	h.must(http.StatusOK, "GET", "/healthz", "", nil)
	var ready struct {
		Status     string
		AppliedSeq uint64 `json:"applied_seq"`
	}
	h.must(http.StatusOK, "GET", "/readyz", "", nil).json(t, &ready)
	if ready.Status != "ready" {
		t.Errorf("readyz = %+v", ready)
	}
	res := h.must(http.StatusMethodNotAllowed, "PUT", "/v1/verify", "", "{}")
	if res.errorCode() != "method_not_allowed" {
		t.Errorf("PUT /v1/verify = %s", res.body)
	}
}

func TestNotReadyUntilCaughtUp(t *testing.T) {
	env := natstest.Start(t)
	idle := projections.NewRunner(env.Store, natstest.Quiet()) // never run: never caught up
	api := &khttp.Server{Runner: idle, Listing: projections.NewListing(), Index: projections.NewVerifyIndex(), Log: env.Store, Logger: natstest.Quiet()}
	srv := httptest.NewServer(api.Handler())
	defer srv.Close()
	res, err := http.Get(srv.URL + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("/readyz before catching up = %d, want 503", res.StatusCode)
	}
}
