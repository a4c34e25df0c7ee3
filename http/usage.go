package http

import (
	"net/http"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/keyledger/keyledger/domain"
	"github.com/keyledger/keyledger/events"
	"github.com/keyledger/keyledger/projections"
	"github.com/keyledger/keyledger/usage"
)

// recordOutcome counts a verification of a secret that matched a key by
// its whole hash (any outcome but NOT_FOUND and MALFORMED), with its
// caller: the address the rate limits see and the User-Agent.
func (s *Server) recordOutcome(r *http.Request, res projections.Result, now time.Time) {
	if s.SkipOutcomes || res.Key.ID == "" {
		return
	}
	s.Outcomes.RecordVerdict(res.Verdict, res.Key, usage.Caller{Address: clientKey(r), UserAgent: r.Header.Get("User-Agent")}, now)
}

// CountsView is a span's verifications of a key by outcome. Replaced is
// how many of the deprecated and expired presented a secret a rotation
// replaced.
type CountsView struct {
	Valid      uint64 `json:"valid"`
	Deprecated uint64 `json:"deprecated"`
	Expired    uint64 `json:"expired"`
	Revoked    uint64 `json:"revoked"`
	Replaced   uint64 `json:"replaced"`
}

func countsView(c usage.Counts) CountsView {
	return CountsView{c.Valid, c.Deprecated, c.Expired, c.Revoked, c.Replaced}
}

// BucketView is one bucket of a key's usage.
type BucketView struct {
	Start string `json:"start"`
	CountsView
}

// CallerView is one recent caller of a key.
type CallerView struct {
	Address     string `json:"address"`
	UserAgent   string `json:"user_agent"`
	Service     string `json:"service"`
	FirstSeen   string `json:"first_seen"`
	LastSeen    string `json:"last_seen"`
	Count       uint64 `json:"count"`
	LastOutcome string `json:"last_outcome"`
}

// KeyUsageView answers GET /v1/orgs/{org}/keys/{id}/usage.
type KeyUsageView struct {
	KeyID   string       `json:"key_id"`
	Window  string       `json:"window"`
	Step    string       `json:"step"`
	Buckets []BucketView `json:"buckets"`
	Totals  CountsView   `json:"totals"`
	Callers []CallerView `json:"callers"`
}

// windows are the spans usage is asked for, and the default step of each.
var windows = map[string]struct {
	span time.Duration
	step string
}{
	"24h": {24 * time.Hour, "1h"},
	"7d":  {7 * 24 * time.Hour, "1h"},
	"30d": {30 * 24 * time.Hour, "1d"},
	"90d": {90 * 24 * time.Hour, "1d"},
}

var steps = map[string]time.Duration{"1m": time.Minute, "1h": time.Hour, "1d": 24 * time.Hour}

// usageWindow reads ?window= (def when absent) and ?step=.
func usageWindow(r *http.Request, def string) (window, step string, span, width time.Duration, err error) {
	q := r.URL.Query()
	window = q.Get("window")
	if window == "" {
		window = def
	}
	w, ok := windows[window]
	if !ok {
		return "", "", 0, 0, domain.Errorf(domain.EINVALID, "window must be 24h, 7d, 30d or 90d")
	}
	step = q.Get("step")
	if step == "" {
		step = w.step
	}
	width, ok = steps[step]
	switch {
	case !ok:
		return "", "", 0, 0, domain.Errorf(domain.EINVALID, "step must be 1m, 1h or 1d")
	case width == time.Minute && w.span > 24*time.Hour:
		return "", "", 0, 0, domain.Errorf(domain.EINVALID, "step 1m is kept for 24 hours only: ask for window=24h, or step=1h or 1d")
	}
	return window, step, w.span, width, nil
}

// keyUsage answers a key's verifications by outcome over a window, in
// contiguous buckets (the last one the current, partial one), and its
// recent callers, the latest first.
func (s *Server) keyUsage(w http.ResponseWriter, r *http.Request) {
	window, step, span, width, err := usageWindow(r, "24h")
	if err != nil {
		s.fail(w, r, err)
		return
	}
	if err := s.minSeq(r); err != nil {
		s.fail(w, r, err)
		return
	}
	org, id := orgAndKey(r)
	if _, ok := s.Listing.Get(org, id); !ok {
		s.fail(w, r, domain.Errorf(domain.ENOTFOUND, "key %s not found in org %s", id, org))
		return
	}
	end := s.Now().UTC().Truncate(width).Add(width)
	from := end.Add(-span)
	series := s.Outcomes.Series(org, id, from, width, int(span/width))
	v := KeyUsageView{KeyID: id, Window: window, Step: step, Buckets: make([]BucketView, len(series)), Callers: []CallerView{}}
	var total usage.Counts
	for i, c := range series {
		v.Buckets[i] = BucketView{Start: from.Add(time.Duration(i) * width).Format(time.RFC3339), CountsView: countsView(c)}
		total.Add(c)
	}
	v.Totals = countsView(total)
	for _, c := range s.Outcomes.Callers(org, id) {
		v.Callers = append(v.Callers, CallerView{Address: callerAddress(c.Caller), UserAgent: c.UserAgent, Service: c.Service,
			FirstSeen: c.FirstSeen.Format(time.RFC3339), LastSeen: c.LastSeen.Format(time.RFC3339), Count: c.Count, LastOutcome: c.LastOutcome.String()})
	}
	w.Header()["Cache-Control"] = noStore
	writeJSON(w, http.StatusOK, v)
}

// callerAddress shows an IPv6 client as the /64 the limits count it by.
func callerAddress(c usage.Caller) string {
	switch {
	case !c.Address.IsValid():
		return ""
	case c.Address.Is6():
		return c.Address.String() + "/64"
	}
	return c.Address.String()
}

// KeyUsageTotals is one key's line in GET /v1/orgs/{org}/usage.
type KeyUsageTotals struct {
	KeyID      string     `json:"key_id"`
	Name       string     `json:"name"`
	Status     string     `json:"status"`
	LastUsedAt *string    `json:"last_used_at"`
	Totals     CountsView `json:"totals"`
}

// maxUsageScan bounds the keys one page of the org's usage examines: a
// filter matching few keys answers a short page and a cursor.
const maxUsageScan = 10000

// orgUsage answers per-key totals over a window, filtered by status, by
// "no valid use since" and by "a revoked or replaced secret presented in
// the window", paged as the listing of keys is.
func (s *Server) orgUsage(w http.ResponseWriter, r *http.Request) {
	window, _, span, _, err := usageWindow(r, "30d")
	if err != nil {
		s.fail(w, r, err)
		return
	}
	q := r.URL.Query()
	status := q.Get("status")
	switch status {
	case "":
		status = "all"
	case "all", string(domain.StatusActive), string(domain.StatusRevoked), string(domain.StatusExpired):
	default:
		s.fail(w, r, domain.Errorf(domain.EINVALID, "status must be all, active, revoked or expired"))
		return
	}
	presented := q.Get("presented")
	if presented != "" && presented != "revoked" && presented != "replaced" {
		s.fail(w, r, domain.Errorf(domain.EINVALID, "presented must be revoked or replaced"))
		return
	}
	now := s.Now()
	var unusedSince time.Time
	if v := q.Get("unused_since"); v != "" {
		if unusedSince, err = time.Parse(time.RFC3339, v); err != nil {
			d, perr := parseSpan(v)
			if perr != nil {
				s.fail(w, r, domain.Errorf(domain.EINVALID, "unused_since must be an RFC 3339 time or a span like 30d"))
				return
			}
			unusedSince = now.Add(-d)
		}
	}
	cursor, limit, err := keyPage(r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	if err := s.minSeq(r); err != nil {
		s.fail(w, r, err)
		return
	}
	org, since := chi.URLParam(r, "org"), now.Add(-span)
	out, next := []KeyUsageTotals{}, cursor
	for scanned := 0; scanned < maxUsageScan && len(out) < int(limit); {
		page, more := s.Listing.List(org, projections.ListQuery{Status: status, Cursor: next, Limit: int(limit), Now: now})
		for i := 0; i < len(page) && len(out) < int(limit); i++ {
			k := page[i]
			next, scanned = k.ID, scanned+1
			t, last := s.Outcomes.Totals(org, k.ID, since), s.Usage.LastUsed(org, k.ID)
			if (!unusedSince.IsZero() && (!last.Before(unusedSince) || s.validUseSince(org, k.ID, unusedSince))) ||
				(presented == "revoked" && t.Revoked == 0) || (presented == "replaced" && t.Replaced == 0) {
				continue
			}
			out = append(out, KeyUsageTotals{KeyID: k.ID, Name: k.Name, Status: string(k.Status(now)),
				LastUsedAt: events.OptionalTime(last), Totals: countsView(t)})
		}
		if more == "" && (len(page) == 0 || next == page[len(page)-1].ID) {
			next = "" // every key examined
			break
		}
	}
	w.Header()["Cache-Control"] = noStore
	writeJSON(w, http.StatusOK, map[string]any{"window": window, "keys": out, "next_cursor": next})
}

// validUseSince tells whether org/id's outcomes count a valid use (with
// its current secret or one in its grace) since then: a Go verifier's
// verifications reach the outcomes by its reports, never the last use
// over HTTP, and a key a service verifies in process is in use.
func (s *Server) validUseSince(org, id string, since time.Time) bool {
	c := s.Outcomes.Totals(org, id, since)
	return c.Valid+c.Deprecated > 0
}
