package http_test

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/keyledger/keyledger/domain"
	khttp "github.com/keyledger/keyledger/http"
)

// TestBadInputAppendsNothing sends every kind of bad request and checks
// both its answer and that the stream did not move.
func TestBadInputAppendsNothing(t *testing.T) {
	h := start(t)
	admin := h.bootstrap("acme")
	other := h.bootstrap("globex")
	reader := h.bootstrap("acme", "invoices:read")
	k := h.create("acme", admin, map[string]any{"name": "target"}).Key
	keyPath := "/v1/orgs/acme/keys/" + k.ID

	const keys = "/v1/orgs/acme/keys"
	ok := map[string]any{"name": "fine"}
	for _, tc := range []struct {
		name, method, path, token string
		body                      any
		headers                   []string
		status                    int
		code                      string
	}{
		{"InvalidJSON", "POST", keys, admin, `{"name":`, nil, 400, "invalid"},
		{"NotAnObject", "POST", keys, admin, `["name"]`, nil, 400, "invalid"},
		{"TwoValues", "POST", keys, admin, `{"name":"a"}{"name":"b"}`, nil, 400, "invalid"},
		{"EmptyBody", "POST", keys, admin, ``, nil, 400, "invalid"},
		{"UnknownField", "POST", keys, admin, `{"name":"a","admin":true}`, nil, 400, "invalid"},
		{"WrongFieldType", "POST", keys, admin, `{"name":42}`, nil, 400, "invalid"},
		{"EmptyName", "POST", keys, admin, map[string]any{"name": ""}, nil, 400, "invalid"},
		{"BlankName", "POST", keys, admin, map[string]any{"name": "   "}, nil, 400, "invalid"},
		{"NameOf101Characters", "POST", keys, admin, map[string]any{"name": strings.Repeat("x", 101)}, nil, 400, "invalid"},
		{"NameWithControlCharacter", "POST", keys, admin, map[string]any{"name": "bad\x07name"}, nil, 400, "invalid"},
		{"NameWithNewline", "POST", keys, admin, map[string]any{"name": "two\nlines"}, nil, 400, "invalid"},
		{"BadScope", "POST", keys, admin, map[string]any{"name": "a", "scopes": []string{"Read"}}, nil, 400, "invalid"},
		{"TooManyScopes", "POST", keys, admin, map[string]any{"name": "a", "scopes": manyScopes(33)}, nil, 400, "invalid"},
		{"ExpiryInThePast", "POST", keys, admin, map[string]any{"name": "a", "expires_at": "2020-01-01T00:00:00Z"}, nil, 400, "invalid"},
		{"ExpiryNotATime", "POST", keys, admin, map[string]any{"name": "a", "expires_at": "tomorrow"}, nil, 400, "invalid"},
		{"BodyOf65KiB", "POST", keys, admin, `{"name":"` + strings.Repeat("x", 65<<10) + `"}`, nil, 413, "too_large"},
		{"BodyOf65KiBWithoutLength", "POST", keys, admin, strings.NewReader(`{"name":"` + strings.Repeat("x", 65<<10) + `"}`), nil, 413, "too_large"},
		{"TextContentType", "POST", keys, admin, `{"name":"a"}`, []string{"Content-Type", "text/plain"}, 415, "unsupported_media_type"},
		{"FormContentType", "POST", keys, admin, `name=a`, []string{"Content-Type", "application/x-www-form-urlencoded"}, 415, "unsupported_media_type"},
		{"NoContentType", "POST", keys, admin, `{"name":"a"}`, []string{"Content-Type", ""}, 415, "unsupported_media_type"},
		{"OrgWithDot", "POST", "/v1/orgs/ac.me/keys", admin, ok, nil, 400, "invalid"},
		{"OrgWithStar", "POST", "/v1/orgs/ac*me/keys", admin, ok, nil, 400, "invalid"},
		{"OrgWithGreaterThan", "POST", "/v1/orgs/ac%3Eme/keys", admin, ok, nil, 400, "invalid"},
		{"OrgWithSpace", "POST", "/v1/orgs/ac%20me/keys", admin, ok, nil, 400, "invalid"},
		{"OrgWithUpperCase", "POST", "/v1/orgs/Acme/keys", admin, ok, nil, 400, "invalid"},
		{"OrgWithWildcardOnly", "POST", "/v1/orgs/%3E/keys", admin, ok, nil, 400, "invalid"},
		{"UnknownKeyID", "POST", "/v1/orgs/acme/keys/" + domain.NewKeyID() + "/rotate", admin, nil, nil, 404, "not_found"},
		{"MalformedKeyID", "POST", "/v1/orgs/acme/keys/key_nope/rotate", admin, nil, nil, 400, "invalid"},
		{"KeyIDWithWildcard", "DELETE", "/v1/orgs/acme/keys/key_*", admin, nil, nil, 400, "invalid"},
		{"LowerCaseKeyID", "DELETE", "/v1/orgs/acme/keys/" + strings.ToLower(k.ID), admin, nil, nil, 400, "invalid"},
		{"NegativeGrace", "POST", keyPath + "/rotate", admin, map[string]any{"grace_period_seconds": -1}, nil, 400, "invalid"},
		{"GraceOverSevenDays", "POST", keyPath + "/rotate", admin, map[string]any{"grace_period_seconds": 7*24*3600 + 1}, nil, 400, "invalid"},
		{"BadIfMatch", "DELETE", keyPath, admin, nil, []string{"If-Match", "yesterday"}, 400, "invalid"},
		{"CredentialOfAnotherOrg", "POST", keys, other, ok, nil, 403, "forbidden"},
		{"CredentialOfAnotherOrgRevoking", "DELETE", keyPath, other, nil, nil, 403, "forbidden"},
		{"NoCredential", "POST", keys, "", ok, nil, 401, "unauthenticated"},
		{"NoCredentialRevoking", "DELETE", keyPath, "", nil, nil, 401, "unauthenticated"},
		{"UnknownCredential", "POST", keys, mustSecret(t), ok, nil, 401, "unauthenticated"},
		{"GarbageCredential", "POST", keys, "hunter2", ok, nil, 401, "unauthenticated"},
		{"BasicAuth", "POST", keys, "", ok, []string{"Authorization", "Basic YWRtaW46YWRtaW4="}, 401, "unauthenticated"},
		{"KeyWithoutManageScope", "POST", keys, reader, ok, nil, 403, "forbidden"},
		{"KeyWithoutManageScopeRotating", "POST", keyPath + "/rotate", reader, nil, nil, 403, "forbidden"},
		{"BadStatusFilter", "GET", keys + "?status=deleted", admin, nil, nil, 400, "invalid"},
		{"BadLimit", "GET", keys + "?limit=0", admin, nil, nil, 400, "invalid"},
		{"BadCursor", "GET", keys + "?cursor=../../etc", admin, nil, nil, 400, "invalid"},
		{"BadAfterSeq", "GET", "/v1/orgs/acme/events?after_seq=-1", admin, nil, nil, 400, "invalid"},
		{"UnknownRoute", "GET", "/v1/nothing", admin, nil, nil, 404, "not_found"},
		{"VerifyNotJSON", "POST", "/v1/verify", "", `key=abc`, []string{"Content-Type", "text/plain"}, 415, "unsupported_media_type"},
		{"VerifyUnknownField", "POST", "/v1/verify", "", `{"key":"x","org":"acme"}`, nil, 400, "invalid"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := h.env.LastSeq(t)
			res := h.request(tc.method, tc.path, tc.token, tc.body, tc.headers...)
			if res.StatusCode != tc.status || res.errorCode() != tc.code {
				t.Errorf("%s %s = %d %s, want %d %s", tc.method, tc.path, res.StatusCode, res.body, tc.status, tc.code)
			}
			if got := res.Header.Get("Content-Type"); got != "application/json" {
				t.Errorf("Content-Type = %q, want application/json", got)
			}
			if after := h.env.LastSeq(t); after != before {
				t.Errorf("the stream moved from %d to %d", before, after)
			}
		})
	}
}

func manyScopes(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = "scope" + strings.Repeat("x", i)
	}
	return out
}

func mustSecret(t *testing.T) string {
	t.Helper()
	s, err := domain.GenerateSecret(domain.DefaultPrefix, nil)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestRevokedManagementKeyStopsAtOnce(t *testing.T) {
	h := start(t)
	admin := h.bootstrap("acme")
	second := h.create("acme", admin, map[string]any{"name": "second admin", "scopes": []string{domain.ScopeManage}})
	h.must(http.StatusOK, "GET", "/v1/orgs/acme/keys", second.Secret, nil)
	h.must(http.StatusNoContent, "DELETE", "/v1/orgs/acme/keys/"+second.Key.ID, admin, nil)
	res := h.must(http.StatusUnauthorized, "GET", "/v1/orgs/acme/keys", second.Secret, nil)
	if strings.Contains(string(res.body), second.Secret) {
		t.Error("the error answer holds the credential")
	}
}

// TestWritesAnswer503WhileNATSIsDown stops the event store under a running
// instance: writes answer 503 unavailable with Retry-After within the
// command timeout, and verification keeps answering from memory.
func TestWritesAnswer503WhileNATSIsDown(t *testing.T) {
	h := startWith(t, t.TempDir(), func(s *khttp.Server) { s.CommandTimeout = time.Second })
	admin := h.bootstrap("acme")
	k := h.create("acme", admin, map[string]any{"name": "survivor"})
	h.env.Stop()

	for _, tc := range []struct{ method, path string }{
		{"POST", "/v1/orgs/acme/keys"},
		{"POST", "/v1/orgs/acme/keys/" + k.Key.ID + "/rotate"},
		{"DELETE", "/v1/orgs/acme/keys/" + k.Key.ID},
	} {
		start := time.Now()
		var body any
		if tc.path == "/v1/orgs/acme/keys" {
			body = map[string]any{"name": "while down"}
		}
		res := h.request(tc.method, tc.path, admin, body)
		if res.StatusCode != http.StatusServiceUnavailable || res.errorCode() != "unavailable" || res.Header.Get("Retry-After") == "" {
			t.Errorf("%s %s while NATS is down: %d %s", tc.method, tc.path, res.StatusCode, res.body)
		}
		if took := time.Since(start); took > 5*time.Second {
			t.Errorf("%s %s took %s, want within the command timeout", tc.method, tc.path, took)
		}
	}
	if got := h.verify(k.Secret); got.Code != "VALID" {
		t.Errorf("verify while NATS is down: %s, want VALID from memory", got.Code)
	}
}

// TestRequestsAndStreamsAreBounded fills the one slot of each pool: the
// next request or stream is refused with 503 at once instead of piling up.
func TestRequestsAndStreamsAreBounded(t *testing.T) {
	var st stalledCreates
	h := startWith(t, t.TempDir(), func(s *khttp.Server) { s.MaxInFlight, s.MaxStreams = 1, 1; st.stall(s) })
	admin := h.bootstrap("acme")
	s := h.openStream("/v1/orgs/acme/events/stream", admin)
	defer s.cancel()
	res := h.request("GET", "/v1/orgs/acme/events/stream", admin, nil)
	if res.StatusCode != http.StatusServiceUnavailable || res.Header.Get("Retry-After") == "" {
		t.Errorf("a second stream: %d %s", res.StatusCode, res.body)
	}
	// A write stuck on a slow event store holds the one request slot;
	// meanwhile another request is refused.
	release := holdRequestSlot(t, h, &st, admin)
	if res := h.request("POST", "/v1/verify", "", map[string]string{"key": admin}); res.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("a request while the slot is held: %d", res.StatusCode)
	}
	h.must(http.StatusOK, "GET", "/healthz", "", nil) // health checks are never refused
	release()
	h.must(http.StatusOK, "POST", "/v1/verify", "", map[string]string{"key": admin})
}
