package http_test

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keyledger/keyledger/domain"
	khttp "github.com/keyledger/keyledger/http"
)

// TestAttackManyRotationsKeepBoundedSecrets rotates one key a hundred
// times: the table holds a bounded number of its hashes, the most recently
// replaced secrets still answer EXPIRED (REVOKED once the key is revoked),
// and older ones, or any past the memory period, answer NOT_FOUND.
func TestAttackManyRotationsKeepBoundedSecrets(t *testing.T) {
	var ahead atomic.Int64 // how far the instance's clock runs ahead
	h := startWith(t, t.TempDir(), func(s *khttp.Server) {
		s.Now = func() time.Time { return time.Now().Add(time.Duration(ahead.Load())) }
	})
	admin := h.bootstrap("acme")
	k := h.create("acme", admin, map[string]any{"name": "rotated a lot"})
	secrets := []string{k.Secret}
	const rotations = 100
	for range rotations {
		issued, err := h.keys.Rotate(context.Background(), "acme", k.Key.ID, domain.RotateKey{By: asSystem})
		if err != nil {
			t.Fatal(err)
		}
		secrets = append(secrets, issued.Secret)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := h.runner.WaitFor(ctx, h.env.LastSeq(t)); err != nil {
		t.Fatal(err)
	}

	// The admin's one secret, and the key's current one and the 16 it
	// remembers of those it had.
	if got, want := h.api.Index.Table().Hashes(), 1+1+domain.MaxReplacedSecrets; got != want {
		t.Errorf("after %d rotations the table holds %d hashes, want %d", rotations, got, want)
	}
	current := secrets[rotations]
	remembered := secrets[rotations-domain.MaxReplacedSecrets : rotations]
	forgotten := secrets[:rotations-domain.MaxReplacedSecrets]
	codes := func(secrets []string, want string) {
		t.Helper()
		for i, s := range secrets {
			if got := h.verify(s).Code; got != want {
				t.Errorf("secret %d of %d: %s, want %s", i+1, len(secrets), got, want)
			}
		}
	}
	codes([]string{current}, domain.VerifyValid)
	codes(remembered, domain.VerifyExpired)
	codes(forgotten, domain.VerifyNotFound)

	// Past the memory period even the secret replaced last is forgotten.
	ahead.Store(int64(domain.ReplacedSecretMemory + time.Minute))
	codes([]string{current}, domain.VerifyValid)
	codes(secrets[rotations-1:rotations], domain.VerifyNotFound)
	ahead.Store(0)

	h.must(http.StatusNoContent, "DELETE", "/v1/orgs/acme/keys/"+k.Key.ID, admin, nil)
	codes([]string{current}, domain.VerifyRevoked)
	codes(remembered, domain.VerifyRevoked)
	codes(forgotten, domain.VerifyNotFound)
}

// orgEventPage is an answer of GET /v1/orgs/{org}/events or of a key's
// history.
type orgEventPage struct {
	Events       []eventView
	NextAfterSeq uint64 `json:"next_after_seq"`
	More         bool
}

// TestAttackActorScanIsBudgeted asks for the events of an actor who did
// nothing in an org of many events: each answer examines at most the scan
// budget and says where to continue, and the continuations together
// examine the history once. The event stream still delivers past the
// budget.
func TestAttackActorScanIsBudgeted(t *testing.T) {
	const budget = 50
	h := startWith(t, t.TempDir(), func(s *khttp.Server) { s.ScanBudget = budget })
	admin := h.bootstrap("acme")
	first := h.env.LastSeq(t)
	for i := range 3 * budget {
		if _, err := h.keys.Create(context.Background(), domain.CreateKey{OrgID: "acme", Name: fmt.Sprintf("key %d", i), By: domain.PersonPrincipal("u_busy", "", map[string]string{"acme": domain.RoleManager})}); err != nil {
			t.Fatal(err)
		}
	}
	last := h.env.LastSeq(t)

	after, asked := uint64(0), 0
	for {
		var page orgEventPage
		h.must(http.StatusOK, "GET", fmt.Sprintf("/v1/orgs/acme/events?actor=u_nobody&after_seq=%d", after), admin, nil).json(t, &page)
		asked++
		if len(page.Events) != 0 {
			t.Fatalf("events of an actor who did nothing: %+v", page.Events)
		}
		if page.NextAfterSeq <= after && page.More || page.NextAfterSeq > after+budget {
			t.Fatalf("after %d: next_after_seq %d, more %v; want at most %d events examined, and progress", after, page.NextAfterSeq, page.More, budget)
		}
		after = page.NextAfterSeq
		if !page.More {
			break
		}
	}
	if after != last || asked != int(last-first+1+budget-1)/budget {
		t.Errorf("the scan ended after %d in %d answers; want after %d in %d", after, asked, last, int(last-first+1+budget-1)/budget)
	}

	var found []eventView
	for after, more := uint64(0), true; more; {
		var page orgEventPage
		h.must(http.StatusOK, "GET", fmt.Sprintf("/v1/orgs/acme/events?actor=u_busy&limit=1000&after_seq=%d", after), admin, nil).json(t, &page)
		found, after, more = append(found, page.Events...), page.NextAfterSeq, page.More
	}
	if len(found) != 3*budget {
		t.Errorf("the continuations found %d events of the busy actor, want %d", len(found), 3*budget)
	}

	s := h.openStream("/v1/orgs/acme/events/stream?after_seq=0&types=KeyRevoked", admin)
	h.must(http.StatusNoContent, "DELETE", "/v1/orgs/acme/keys/"+found[len(found)-1].KeyID, admin, nil)
	if got := s.next(t, 1)[0]; got.event != "KeyRevoked" {
		t.Errorf("the stream sent %+v, want the revocation", got)
	}
}

// TestAttackKeyHistoryIsPaged reads the history of a key rotated many
// times: pages of at most limit events, oldest first, that together hold
// every event once.
func TestAttackKeyHistoryIsPaged(t *testing.T) {
	h := start(t)
	admin := h.bootstrap("acme")
	k := h.create("acme", admin, map[string]any{"name": "rotated a lot"})
	const rotations = 150
	for range rotations {
		if _, err := h.keys.Rotate(context.Background(), "acme", k.Key.ID, domain.RotateKey{By: asSystem}); err != nil {
			t.Fatal(err)
		}
	}
	path := "/v1/orgs/acme/keys/" + k.Key.ID + "/events"

	var first orgEventPage
	h.must(http.StatusOK, "GET", path, admin, nil).json(t, &first)
	if len(first.Events) != 100 || !first.More || first.NextAfterSeq != first.Events[99].Seq {
		t.Fatalf("first page by default: %d events, more %v, next_after_seq %d; want 100, true, the last one's", len(first.Events), first.More, first.NextAfterSeq)
	}
	var all []eventView
	for after, more := uint64(0), true; more; {
		var page orgEventPage
		h.must(http.StatusOK, "GET", fmt.Sprintf("%s?limit=40&after_seq=%d", path, after), admin, nil).json(t, &page)
		if len(page.Events) > 40 {
			t.Fatalf("a page of %d events, want at most 40", len(page.Events))
		}
		all, after, more = append(all, page.Events...), page.NextAfterSeq, page.More
	}
	if len(all) != 1+rotations || all[0].Type != "KeyCreated" {
		t.Fatalf("the pages hold %d events, first %s; want %d, KeyCreated first", len(all), all[0].Type, 1+rotations)
	}
	for i := 1; i < len(all); i++ {
		if all[i].Seq <= all[i-1].Seq || all[i].KeyID != k.Key.ID {
			t.Fatalf("event %d: seq %d of %s after seq %d", i, all[i].Seq, all[i].KeyID, all[i-1].Seq)
		}
	}
	for _, q := range []string{"?limit=0", "?limit=1001", "?after_seq=-1", "?after_seq=x"} {
		if res := h.request("GET", path+q, admin, nil); res.StatusCode != http.StatusBadRequest {
			t.Errorf("%s: %d, want 400", q, res.StatusCode)
		}
	}
	// Past the last event: an empty last page, not a 404; an unknown key is.
	var end orgEventPage
	h.must(http.StatusOK, "GET", fmt.Sprintf("%s?after_seq=%d", path, all[len(all)-1].Seq), admin, nil).json(t, &end)
	if len(end.Events) != 0 || end.More {
		t.Errorf("after the last event: %+v", end)
	}
	h.must(http.StatusNotFound, "GET", fmt.Sprintf("/v1/orgs/acme/keys/%s/events?after_seq=5", domain.NewKeyID()), admin, nil)
}

// asOfPage is an answer of GET /v1/orgs/{org}/keys?as_of=.
type asOfPage struct {
	AsOf       string `json:"as_of"`
	Keys       []keyView
	NextCursor string `json:"next_cursor"`
}

// asOfAll reads every page of the keys as of at, limit at a time.
func asOfAll(t *testing.T, h *harness, token string, at time.Time, limit int, each func(asOfPage)) []keyView {
	t.Helper()
	var all []keyView
	for cursor, asked := "", 0; ; asked++ {
		if asked > 1000 {
			t.Fatal("the cursors never end")
		}
		q := url.Values{"as_of": {at.Format(time.RFC3339Nano)}, "limit": {fmt.Sprint(limit)}, "cursor": {cursor}}
		var page asOfPage
		h.must(http.StatusOK, "GET", "/v1/orgs/acme/keys?"+q.Encode(), token, nil).json(t, &page)
		if len(page.Keys) > limit {
			t.Fatalf("a page of %d keys, want at most %d", len(page.Keys), limit)
		}
		if each != nil {
			each(page)
		}
		all = append(all, page.Keys...)
		if page.NextCursor == "" {
			return all
		}
		cursor = page.NextCursor
	}
}

// TestAttackAsOfIsPagedAndBudgeted lists an org's keys as of an instant:
// pages of at most limit keys, oldest first, each folding at most the scan
// budget of events (or one key's history, whole, when it alone is more),
// whose cursors together give every key that existed then, once.
func TestAttackAsOfIsPagedAndBudgeted(t *testing.T) {
	const budget = 30
	h := startWith(t, t.TempDir(), func(s *khttp.Server) { s.ScanBudget = budget })
	admin := h.bootstrap("acme")
	ctx := context.Background()
	create := func(name string) string {
		t.Helper()
		issued, err := h.keys.Create(ctx, domain.CreateKey{OrgID: "acme", Name: name, By: domain.PersonPrincipal("u_1", "", map[string]string{"acme": domain.RoleManager})})
		if err != nil {
			t.Fatal(err)
		}
		return issued.Key.ID
	}
	var before []string
	for i := range 140 {
		before = append(before, create(fmt.Sprintf("key %d", i)))
	}
	// One key whose history alone is over the budget.
	busy := before[70]
	var masked string
	for range 2 * budget {
		issued, err := h.keys.Rotate(ctx, "acme", busy, domain.RotateKey{By: asSystem})
		if err != nil {
			t.Fatal(err)
		}
		masked = issued.Key.Masked
	}
	at := time.Now()
	for i := range 20 {
		create(fmt.Sprintf("later key %d", i))
	}
	if err := h.runner.WaitFor(ctx, h.env.LastSeq(t)); err != nil {
		t.Fatal(err)
	}

	// The default page: at most 100 keys and a cursor.
	var first asOfPage
	h.must(http.StatusOK, "GET", "/v1/orgs/acme/keys?as_of="+url.QueryEscape(at.Format(time.RFC3339Nano)), admin, nil).json(t, &first)
	if len(first.Keys) > budget || first.NextCursor == "" {
		t.Fatalf("first page: %d keys, next cursor %q; want at most %d keys (one event each) and a cursor", len(first.Keys), first.NextCursor, budget)
	}

	all := asOfAll(t, h, admin, at, 100, func(p asOfPage) {
		if len(p.Keys) > budget && !(len(p.Keys) == 1 && p.Keys[0].ID == busy) {
			t.Errorf("a page folded %d keys, over the budget of %d events", len(p.Keys), budget)
		}
	})
	want := append([]string{}, before...)
	if got := ids(all); len(got) != len(want)+1 || !slices.Equal(got[1:], want) {
		t.Fatalf("as of then, the pages hold %d keys; want the admin and the %d created before", len(got), len(want))
	}
	for _, k := range all {
		if k.ID == busy && k.Masked != masked {
			t.Errorf("the busy key as of then shows %s, want %s", k.Masked, masked)
		}
	}
	if got := asOfAll(t, h, admin, time.Now(), 7, nil); len(got) != 1+140+20 {
		t.Errorf("as of now, 7 at a time: %d keys, want %d", len(got), 1+140+20)
	}
	for _, q := range []string{"&limit=0", "&limit=1001", "&cursor=nope"} {
		if res := h.request("GET", "/v1/orgs/acme/keys?as_of="+url.QueryEscape(at.Format(time.RFC3339Nano))+q, admin, nil); res.StatusCode != http.StatusBadRequest {
			t.Errorf("%s: %d, want 400", q, res.StatusCode)
		}
	}
}

// TestWriteLimitIsPerCredential: creates and rotations share one budget
// per credential, spent only by those that succeed; past it they answer
// 429 with Retry-After and append nothing, while a replay of an answered
// Idempotency-Key, a revocation and another credential's writes go
// through.
func TestWriteLimitIsPerCredential(t *testing.T) {
	h := startWith(t, t.TempDir(), func(s *khttp.Server) {
		s.WriteLimit = khttp.Limit{Per: 3, Every: time.Hour}
	})
	admin := h.bootstrap("acme")
	other := h.bootstrap("acme")
	// Writes that append nothing spend nothing.
	for range 5 {
		h.must(http.StatusBadRequest, "POST", "/v1/orgs/acme/keys", admin, map[string]any{"name": ""})
		h.must(http.StatusNotFound, "POST", "/v1/orgs/acme/keys/"+domain.NewKeyID()+"/rotate", admin, nil)
	}
	first := h.create("acme", admin, map[string]any{"name": "one"})
	retried := map[string]any{"name": "two"}
	h.must(http.StatusCreated, "POST", "/v1/orgs/acme/keys", admin, retried, "Idempotency-Key", "two")
	h.rotate("acme", first.Key.ID, admin, nil)

	before := h.env.LastSeq(t)
	for _, r := range []struct{ method, path string }{
		{"POST", "/v1/orgs/acme/keys"}, {"POST", "/v1/orgs/acme/keys/" + first.Key.ID + "/rotate"},
	} {
		var body any
		if r.method == "POST" && strings.HasSuffix(r.path, "/keys") {
			body = map[string]any{"name": "three"}
		}
		res := h.must(http.StatusTooManyRequests, r.method, r.path, admin, body)
		if res.errorCode() != "rate_limited" || res.Header.Get("Retry-After") == "" {
			t.Errorf("%s %s past the budget: %s, Retry-After %q", r.method, r.path, res.body, res.Header.Get("Retry-After"))
		}
	}
	if got := h.env.LastSeq(t); got != before {
		t.Errorf("refused writes moved the stream from %d to %d", before, got)
	}
	replay := h.must(http.StatusCreated, "POST", "/v1/orgs/acme/keys", admin, retried, "Idempotency-Key", "two")
	mustHeader(t, replay, "Idempotent-Replayed", "true")
	h.must(http.StatusNoContent, "DELETE", "/v1/orgs/acme/keys/"+first.Key.ID, admin, nil)
	h.create("acme", other, map[string]any{"name": "by another credential"})
}
