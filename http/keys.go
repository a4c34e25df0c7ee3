package http

import (
	"fmt"
	"net/http"
	"slices"
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
	p := caller(r.Context())
	scopes, err := domain.ValidateScopes(req.Scopes)
	if err == nil {
		err = p.MayGrant(scopes)
	}
	if err != nil {
		s.fail(w, r, err)
		return
	}
	issued, err := s.Keys.Create(r.Context(), domain.CreateKey{
		OrgID: chi.URLParam(r, "org"), Name: req.Name, Scopes: scopes, ExpiresAt: req.ExpiresAt, Actor: p.Actor,
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
	issued, err := s.Keys.Rotate(r.Context(), org, id, domain.RotateKey{GracePeriod: grace, IfVersion: ifVersion, Actor: caller(r.Context()).Actor})
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
	k, err := s.Keys.Revoke(r.Context(), org, id, domain.RevokeKey{Reason: req.Reason, IfVersion: ifVersion, Actor: caller(r.Context()).Actor})
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
	if k.Version > s.Runner.Applied() {
		if err := s.awaitApplied(r.Context(), k.Version, false); err != nil {
			s.log.WarnContext(r.Context(), "answering a write before this instance applied it", "seq", k.Version, "err", err)
		}
	}
	w.Header().Set("X-Keyledger-Seq", strconv.FormatUint(k.Version, 10))
	w.Header().Set("ETag", etag(k.Version))
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
	cursor := q.Get("cursor")
	if cursor != "" && domain.ValidateKeyID(cursor) != nil {
		s.fail(w, r, domain.Errorf(domain.EINVALID, "cursor is not one this API gave"))
		return
	}
	limit, err := queryUint(r, "limit", 100, 1, 1000)
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

func (s *Server) keyEvents(w http.ResponseWriter, r *http.Request) {
	if err := s.minSeq(r); err != nil {
		s.fail(w, r, err)
		return
	}
	org, id := orgAndKey(r)
	evs, err := s.Log.Load(r.Context(), org, id)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	if len(evs) == 0 {
		s.fail(w, r, domain.Errorf(domain.ENOTFOUND, "key %s not found in org %s", id, org))
		return
	}
	evs = slices.DeleteFunc(evs, func(e domain.Event) bool { return e.Data == nil }) // unknown types
	views, err := viewEvents(evs)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"events": views})
}

func (s *Server) orgEvents(w http.ResponseWriter, r *http.Request) {
	if err := s.minSeq(r); err != nil {
		s.fail(w, r, err)
		return
	}
	after, err := queryUint(r, "after_seq", 0, 0, 1<<63)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	limit, err := queryUint(r, "limit", 100, 1, 1000)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	f, err := eventFilter(r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	evs, next, _, err := s.Log.OrgEvents(r.Context(), chi.URLParam(r, "org"), after, int(limit), f)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	views, err := viewEvents(evs)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"events": views, "next_after_seq": next})
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

// keysAsOf answers GET /v1/orgs/{org}/keys?as_of=T: every key that existed
// at T, as it stood then.
func (s *Server) keysAsOf(w http.ResponseWriter, r *http.Request) {
	at, err := queryTime(r, "as_of")
	if err != nil || at.IsZero() {
		s.fail(w, r, domain.Errorf(domain.EINVALID, "as_of must be an RFC 3339 instant such as 2026-11-26T10:00:00Z"))
		return
	}
	fold := projections.NewAsOf(chi.URLParam(r, "org"), at)
	if err := s.Log.EachOrgEvent(r.Context(), chi.URLParam(r, "org"), 1, fold.Apply); err != nil {
		s.fail(w, r, err)
		return
	}
	keys := fold.Keys()
	views := make([]KeyAtView, len(keys))
	for i, k := range keys {
		v := viewKey(k.Key, at)
		views[i] = KeyAtView{KeyView: v, Valid: k.Valid(), LastChangedBy: events.Actor(k.LastChangedBy), LastChangedAt: events.FormatTime(k.LastChangedAt)}
	}
	writeJSON(w, http.StatusOK, map[string]any{"as_of": events.FormatTime(at), "keys": views})
}
