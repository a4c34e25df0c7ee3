package http

import (
	"context"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/keyledger/keyledger/domain"
	"github.com/keyledger/keyledger/events"
	"github.com/keyledger/keyledger/projections"
)

type createRequest struct {
	Name      string    `json:"name"`
	Scopes    []string  `json:"scopes"`
	ExpiresAt time.Time `json:"expires_at"`
}

func (s *Server) createKey(w http.ResponseWriter, r *http.Request) {
	var req createRequest
	if err := decode(w, r, &req, false); err != nil {
		s.fail(w, r, err)
		return
	}
	issued, err := s.Keys.Create(r.Context(), domain.CreateKey{
		OrgID: chi.URLParam(r, "org"), Name: req.Name, Scopes: req.Scopes, ExpiresAt: req.ExpiresAt, By: caller(r.Context()),
	})
	if err != nil {
		s.fail(w, r, err)
		return
	}
	w.Header().Set("Location", fmt.Sprintf("/v1/orgs/%s/keys/%s", issued.Key.OrgID, issued.Key.ID))
	s.written(w, r, issued.Key)
	writeJSON(w, http.StatusCreated, issuedView{Key: s.view(*issued.Key, s.Now()), Secret: issued.Secret})
}

type rotateRequest struct {
	GracePeriodSeconds int64 `json:"grace_period_seconds"`
}

func (s *Server) rotateKey(w http.ResponseWriter, r *http.Request) {
	var req rotateRequest
	ifVersion, err := decodeChange(w, r, &req)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	grace, err := domain.GracePeriodSeconds(req.GracePeriodSeconds)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	org, id := orgAndKey(r)
	issued, err := s.Keys.Rotate(r.Context(), org, id, domain.RotateKey{GracePeriod: grace, IfVersion: ifVersion, By: caller(r.Context())})
	if err != nil {
		s.fail(w, r, err)
		return
	}
	s.written(w, r, issued.Key)
	writeJSON(w, http.StatusOK, issuedView{Key: s.view(*issued.Key, s.Now()), Secret: issued.Secret})
}

type revokeRequest struct {
	Reason string `json:"reason"`
}

func (s *Server) revokeKey(w http.ResponseWriter, r *http.Request) {
	var req revokeRequest
	ifVersion, err := decodeChange(w, r, &req)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	org, id := orgAndKey(r)
	k, err := s.Keys.Revoke(r.Context(), org, id, domain.RevokeKey{Reason: req.Reason, IfVersion: ifVersion, By: caller(r.Context())})
	if err != nil {
		s.fail(w, r, err)
		return
	}
	s.written(w, r, k)
	w.WriteHeader(http.StatusNoContent)
}

// written makes a write's answer read-your-writes: it waits until this
// instance has applied the write, and names its sequence and version. The
// write is committed either way; a slow projection only costs the wait,
// during which the request holds no slot.
func (s *Server) written(w http.ResponseWriter, r *http.Request, k *domain.Key) {
	s.writtenAt(w, r, k.Version)
}

// writtenAt waits until this instance applied the event at seq that a
// write appended, and says so in the answer's headers.
func (s *Server) writtenAt(w http.ResponseWriter, r *http.Request, seq uint64) {
	if seq > s.Runner.Applied() {
		if err := s.awaitApplied(r.Context(), seq, false); err != nil {
			s.log.WarnContext(r.Context(), "answering a write before this instance applied it", "seq", seq, "err", err)
		}
	}
	w.Header().Set("X-Keyledger-Seq", strconv.FormatUint(seq, 10))
	w.Header().Set("ETag", etag(seq))
	w.Header()["Cache-Control"] = noStore
}

func etag(version uint64) string { return `"` + strconv.FormatUint(version, 10) + `"` }

// decodeChange reads the optional body and If-Match of a change to a key.
func decodeChange(w http.ResponseWriter, r *http.Request, v any) (ifVersion uint64, err error) {
	if err := decode(w, r, v, true); err != nil {
		return 0, err
	}
	return ifMatch(r)
}

// ifMatch reads If-Match: "<version>"; zero when absent or "*".
func ifMatch(r *http.Request) (uint64, error) {
	h := strings.TrimSpace(r.Header.Get("If-Match"))
	if h == "" || h == "*" {
		return 0, nil
	}
	v, err := strconv.ParseUint(strings.Trim(strings.TrimPrefix(h, "W/"), `"`), 10, 64)
	if err != nil || v == 0 {
		return 0, domain.Errorf(domain.EINVALID, `If-Match must be "<version>"`)
	}
	return v, nil
}

func (s *Server) getKey(w http.ResponseWriter, r *http.Request) {
	if err := s.minSeq(r); err != nil {
		s.fail(w, r, err)
		return
	}
	org, id := orgAndKey(r)
	k, ok := s.Listing.Get(org, id)
	if !ok {
		s.fail(w, r, domain.Errorf(domain.ENOTFOUND, "key %s not found in org %s", id, org))
		return
	}
	w.Header().Set("ETag", etag(k.Version))
	if match := r.Header.Get("If-None-Match"); match != "" && match == etag(k.Version) {
		w.WriteHeader(http.StatusNotModified)
		return
	}
	writeJSON(w, http.StatusOK, s.view(k, s.Now()))
}

func (s *Server) listKeys(w http.ResponseWriter, r *http.Request) {
	if err := s.minSeq(r); err != nil {
		s.fail(w, r, err)
		return
	}
	q := r.URL.Query()
	if q.Has("as_of") {
		s.keysAsOf(w, r)
		return
	}
	status := q.Get("status")
	switch status {
	case "", "all", string(domain.StatusActive), string(domain.StatusRevoked), string(domain.StatusExpired):
	default:
		s.fail(w, r, domain.Errorf(domain.EINVALID, "status must be all, active, revoked or expired"))
		return
	}
	cursor, limit, err := keyPage(r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	now := s.Now()
	lq := projections.ListQuery{Status: status, Cursor: cursor, Limit: int(limit), Now: now}
	if within := q.Get("expiring_within"); within != "" {
		d, err := parseSpan(within)
		if err != nil {
			s.fail(w, r, err)
			return
		}
		lq.ExpiringBy = now.Add(d)
	}
	page, next := s.Listing.List(chi.URLParam(r, "org"), lq)
	views := make([]KeyView, len(page))
	for i, k := range page {
		views[i] = s.view(k, now)
	}
	writeJSON(w, http.StatusOK, map[string]any{"keys": views, "next_cursor": next})
}

// eventPage answers a read of the history: a page of events, the sequence
// to ask after next, and whether to go on.
type eventPage struct {
	Events       []events.Envelope `json:"events"`
	NextAfterSeq uint64            `json:"next_after_seq"`
	More         bool              `json:"more"`
}

// pageQuery reads ?after_seq= and ?limit= of a read of the history.
func (s *Server) pageQuery(r *http.Request) (domain.EventQuery, error) {
	after, err := queryUint(r, "after_seq", 0, 0, 1<<63)
	if err != nil {
		return domain.EventQuery{}, err
	}
	limit, err := queryUint(r, "limit", 100, 1, 1000)
	return domain.EventQuery{After: after, Limit: int(limit), Budget: s.ScanBudget}, err
}

// events answers a page of org's events.
func (s *Server) events(r *http.Request, org string, q domain.EventQuery) (eventPage, error) {
	evs, next, more, err := s.Log.OrgEvents(r.Context(), org, q)
	if err != nil {
		return eventPage{}, err
	}
	views, err := viewEvents(evs)
	return eventPage{Events: views, NextAfterSeq: next, More: more}, err
}

// keyEvents answers a page of one key's history, oldest first; 404 for a
// key without events.
func (s *Server) keyEvents(w http.ResponseWriter, r *http.Request) {
	if err := s.minSeq(r); err != nil {
		s.fail(w, r, err)
		return
	}
	q, err := s.pageQuery(r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	org, id := orgAndKey(r)
	q.Filter.KeyID = id
	page, err := s.events(r, org, q)
	if err == nil && len(page.Events) == 0 {
		err = s.keyExists(r, org, id)
	}
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, page)
}

// keyExists returns ENOTFOUND unless the key has an event: in this
// instance's listing, else in the stream (another instance may have just
// created it).
func (s *Server) keyExists(r *http.Request, org, id string) error {
	if _, ok := s.Listing.Get(org, id); ok {
		return nil
	}
	evs, _, _, err := s.Log.OrgEvents(r.Context(), org, domain.EventQuery{Limit: 1, Filter: domain.EventFilter{KeyID: id}})
	if err == nil && len(evs) == 0 {
		err = domain.Errorf(domain.ENOTFOUND, "key %s not found in org %s", id, org)
	}
	return err
}

func (s *Server) orgEvents(w http.ResponseWriter, r *http.Request) {
	if err := s.minSeq(r); err != nil {
		s.fail(w, r, err)
		return
	}
	q, err := s.pageQuery(r)
	if err == nil {
		q.Filter, err = eventFilter(r)
	}
	var page eventPage
	if err == nil {
		page, err = s.events(r, chi.URLParam(r, "org"), q)
	}
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, page)
}

// eventFilter reads ?type=, ?key_id=, ?actor=, ?since= and ?until=.
func eventFilter(r *http.Request) (domain.EventFilter, error) {
	q := r.URL.Query()
	var f domain.EventFilter
	var err error
	if f.Types, err = eventTypes(q.Get("type")); err != nil {
		return f, err
	}
	if f.KeyID = q.Get("key_id"); f.KeyID != "" {
		if err := domain.ValidateKeyID(f.KeyID); err != nil {
			return f, err
		}
	}
	f.ActorID = q.Get("actor")
	if f.Since, err = queryTime(r, "since"); err != nil {
		return f, err
	}
	f.Until, err = queryTime(r, "until")
	return f, err
}

// queryTime reads an optional RFC 3339 instant.
func queryTime(r *http.Request, name string) (time.Time, error) {
	v := r.URL.Query().Get(name)
	if v == "" {
		return time.Time{}, nil
	}
	t, err := time.Parse(time.RFC3339Nano, v)
	if err != nil {
		return time.Time{}, domain.Errorf(domain.EINVALID, "%s must be an RFC 3339 instant such as 2026-11-26T10:00:00Z", name)
	}
	return t, nil
}

// parseSpan reads a span such as "7d", "36h" or "90m" (Go durations, plus
// whole days), up to ten years.
func parseSpan(v string) (time.Duration, error) {
	bad := domain.Errorf(domain.EINVALID, "expiring_within must be a span like 7d, 36h or 90m")
	if days, ok := strings.CutSuffix(v, "d"); ok {
		n, err := strconv.Atoi(days)
		if err != nil || n < 0 || n > 3650 {
			return 0, bad
		}
		return time.Duration(n) * 24 * time.Hour, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil || d < 0 || d > 3650*24*time.Hour {
		return 0, bad
	}
	return d, nil
}

// KeyAtView is a key as it stood at an instant, for auditors.
type KeyAtView struct {
	KeyView
	Valid         bool         `json:"valid"`
	LastChangedBy events.Actor `json:"last_changed_by"`
	LastChangedAt string       `json:"last_changed_at"`
}

// keysAsOf answers GET /v1/orgs/{org}/keys?as_of=T: a page of the keys
// that existed at T, oldest first, as they stood then, with the cursor of
// the next page.
func (s *Server) keysAsOf(w http.ResponseWriter, r *http.Request) {
	at, err := queryTime(r, "as_of")
	if err != nil || at.IsZero() {
		s.fail(w, r, domain.Errorf(domain.EINVALID, "as_of must be an RFC 3339 instant such as 2026-11-26T10:00:00Z"))
		return
	}
	cursor := r.URL.Query().Get("cursor")
	if cursor != "" && domain.ValidateKeyID(cursor) != nil {
		s.fail(w, r, domain.Errorf(domain.EINVALID, "cursor is not one this API gave"))
		return
	}
	limit, err := queryUint(r, "limit", 100, 1, 1000)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	keys, next, err := s.foldAsOf(r.Context(), chi.URLParam(r, "org"), at, cursor, int(limit))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	views := make([]KeyAtView, len(keys))
	for i, k := range keys {
		v := viewKey(k.Key, at)
		views[i] = KeyAtView{KeyView: v, Valid: k.Valid(), LastChangedBy: events.Actor(k.LastChangedBy), LastChangedAt: events.FormatTime(k.LastChangedAt)}
	}
	writeJSON(w, http.StatusOK, map[string]any{"as_of": events.FormatTime(at), "keys": views, "next_cursor": next})
}

// asOfChunk is how many keys one read of the stream folds at most.
const asOfChunk = 100

// foldAsOf folds the keys this instance lists, in id order after cursor,
// a chunk at a time, each from its own events only, until limit of them
// had existed at at or ScanBudget events were read. A chunk over what is
// left of the budget is halved; a single key over it is left for the next
// page, unless it is the first of this one, which is folded whole so that
// every page moves on. So a request reads at most the budget, or one
// key's history. It returns the keys and the cursor to go on from: the
// last key folded, "" once none is left.
func (s *Server) foldAsOf(ctx context.Context, org string, at time.Time, cursor string, limit int) ([]projections.KeyAt, string, error) {
	var out []projections.KeyAt
	budget, spent := uint64(s.ScanBudget), uint64(0)
	for len(out) < limit && spent < budget {
		ids := s.Listing.KeyIDs(org, cursor, min(limit-len(out), asOfChunk))
		if len(ids) == 0 {
			return out, "", nil
		}
		fold := projections.NewAsOf(org, at)
		for {
			most := budget - spent
			if spent == 0 && len(ids) == 1 {
				most = 0
			}
			n, ok, err := s.Log.EachKeyEvent(ctx, org, ids, most, fold.Apply)
			if err != nil {
				return nil, "", err
			}
			if ok {
				spent += n
				break
			}
			if len(ids) == 1 {
				return out, cursor, nil
			}
			ids = ids[:len(ids)/2]
		}
		out = append(out, fold.Keys()...)
		cursor = ids[len(ids)-1]
	}
	if len(s.Listing.KeyIDs(org, cursor, 1)) == 0 {
		cursor = ""
	}
	return out, cursor, nil
}

// keyPage reads a key listing's page: the cursor (a key id this API gave)
// and the limit (1 to 1,000, 100 by default).
func keyPage(r *http.Request) (cursor string, limit uint64, err error) {
	cursor = r.URL.Query().Get("cursor")
	if cursor != "" && domain.ValidateKeyID(cursor) != nil {
		return "", 0, domain.Errorf(domain.EINVALID, "cursor is not one this API gave")
	}
	limit, err = queryUint(r, "limit", 100, 1, 1000)
	return cursor, limit, err
}
