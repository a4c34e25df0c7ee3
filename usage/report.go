package usage

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"time"
	"unicode"

	"github.com/nats-io/nats.go"

	"github.com/keyledger/keyledger/domain"
	"github.com/keyledger/keyledger/events"
)

// Classify is the outcome a verification's verdict counts as against its
// key; ok is false for one that counts against no key (NOT_FOUND,
// MALFORMED, a verifier not ready). keyExpired is whether the key itself
// has ended: an EXPIRED that is not the key's own end is a secret a
// rotation replaced, past its grace.
func Classify(v domain.Verdict, keyExpired bool) (out Outcome, ok bool) {
	switch v.Code {
	case domain.VerifyValid:
		out.Class, out.Replaced = Valid, v.Deprecated
		if v.Deprecated {
			out.Class = Deprecated
		}
	case domain.VerifyExpired:
		out.Class, out.Replaced = Expired, !keyExpired
	case domain.VerifyRevoked:
		out.Class = Revoked
	default:
		return out, false
	}
	return out, true
}

// RecordVerdict counts a verification against the key its secret matched
// (Classify), as made by c at now; a verdict that counts against no key
// is not counted.
func (o *Outcomes) RecordVerdict(v domain.Verdict, key domain.Key, c Caller, now time.Time) {
	if key.ID == "" {
		return
	}
	if out, ok := Classify(v, key.Status(now) == domain.StatusExpired); ok {
		o.Record(key.OrgID, key.ID, out, c, now)
	}
}

// ClientAddress is a caller's address as the rate limits see it, from an
// http.Request's RemoteAddr: an IPv4 address, or an IPv6 /64; the zero
// Addr when it cannot be read.
func ClientAddress(remoteAddr string) netip.Addr {
	ap, err := netip.ParseAddrPort(remoteAddr)
	if err != nil {
		return netip.Addr{}
	}
	addr := ap.Addr().Unmap()
	if addr.Is4() {
		return addr
	}
	p, _ := addr.WithZone("").Prefix(64)
	return p.Addr()
}

// Bounds of a verifier's report.
const (
	// MaxReportKeys is the most keys one report counts; a verifier sends
	// more in several.
	MaxReportKeys = 10_000
	// MaxReportBytes is the largest report read (NATS's default payload).
	MaxReportBytes = 1 << 20
	// ReportReach is how far back, in minutes, a report's minutes count:
	// a verifier reports every minute, and keeps what keyledger did not
	// take for this long.
	ReportReach = 60
	// DefaultMaxReportedKeys is Outcomes.MaxReportedKeys's default.
	DefaultMaxReportedKeys = 10_000
)

// ValidService tells whether name may name a verifier's service: 1 to
// MaxService bytes of letters, digits and . _ - / : (no spaces, no
// control characters).
func ValidService(name string) bool {
	if name == "" || len(name) > MaxService {
		return false
	}
	for _, r := range name {
		if !(unicode.IsLetter(r) || unicode.IsDigit(r) || r == '.' || r == '_' || r == '-' || r == '/' || r == ':') {
			return false
		}
	}
	return true
}

// MergeReport counts a Go verifier's report (a batch, as a flush writes
// it) as verifications made here, so that this instance's next flush
// shares them with the others, once. A report comes from a holder of the
// read-only credential, whom nothing else vouches for: only keys known
// returns true for are counted, at most MaxReportKeys of them, and at most
// MaxReportedKeys in all reports within ReportReach; only the minutes of
// the last ReportReach and the next one are (a minute outside is dropped,
// not moved), and a key's callers made no more calls than those minutes
// count and were seen no later than now (a caller ahead of the clock
// would keep the real ones out of the key's callers: a caller replaces
// the oldest only when at least as recent); every caller is named after
// service, whatever the report says; the rest is bounded as a flush
// bounds it. It returns the keys counted.
func (o *Outcomes) MergeReport(data []byte, service string, known func(org, id string) bool) (int, error) {
	keys, err := o.readReport(data, service, known)
	o.applyReport(keys)
	return len(keys), err
}

// readReport reads what a report would count (see MergeReport), counting
// nothing yet.
func (o *Outcomes) readReport(data []byte, service string, known func(org, id string) bool) ([]reportedKey, error) {
	if !ValidService(service) {
		return nil, fmt.Errorf("a report needs a service name (%s): 1 to %d letters, digits or . _ - / :", events.UsageReportServiceHeader, MaxService)
	}
	if len(data) > MaxReportBytes {
		return nil, fmt.Errorf("a report is at most %d bytes", MaxReportBytes)
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 0, 64<<10), maxLine)
	if !sc.Scan() || sc.Text()+"\n" != batchHeader {
		return nil, errors.New("a report begins with the line " + batchHeader[:len(batchHeader)-1])
	}
	now := o.now()
	newest := int32(now.Unix() / 60)
	lo, hi := now.Add(-24*time.Hour).Unix(), now.Unix()
	var keys []reportedKey
	refused := 0
	defer func() {
		if refused > 0 {
			o.reportsRefused.Add(int64(refused))
		}
	}()
	for sc.Scan() {
		if len(keys) == MaxReportKeys {
			return keys, fmt.Errorf("a report counts at most %d keys", MaxReportKeys)
		}
		var w wireKey
		if err := json.Unmarshal(sc.Bytes(), &w); err != nil || w.Org == "" || w.ID == "" || !known(w.Org, w.ID) {
			continue
		}
		if !o.admitReported(ref{w.Org, w.ID}, newest) {
			refused++
			continue
		}
		if k, ok := readReported(&w, service, newest, lo, hi); ok {
			keys = append(keys, k)
		}
	}
	if refused > 0 {
		return keys, fmt.Errorf("%d keys were not counted: reports counted %d keys in the last %d minutes already (the bound)", refused, o.maxReportedKeys(), ReportReach)
	}
	return keys, sc.Err()
}

func (o *Outcomes) maxReportedKeys() int { return cmp.Or(o.MaxReportedKeys, DefaultMaxReportedKeys) }

// admitReported tells whether a report may count r's key now: one it
// counted within ReportReach, or a new one while fewer than
// MaxReportedKeys are.
func (o *Outcomes) admitReported(r ref, newest int32) bool {
	o.reportedMu.Lock()
	defer o.reportedMu.Unlock()
	if o.reported == nil {
		o.reported = map[ref]int32{}
	}
	if _, ok := o.reported[r]; ok {
		o.reported[r] = newest
		return true
	}
	if len(o.reported) >= o.maxReportedKeys() {
		for k, at := range o.reported {
			if at <= newest-ReportReach {
				delete(o.reported, k)
			}
		}
		if len(o.reported) >= o.maxReportedKeys() {
			return false
		}
	}
	o.reported[r] = newest // r's strings are a decoded line's own
	return true
}

// ReportsRefused counts the keys reports named beyond MaxReportedKeys.
func (o *Outcomes) ReportsRefused() int64 { return o.reportsRefused.Load() }

// reportedKey is what a report counts of one key.
type reportedKey struct {
	w       *wireKey // the key's names: a decoded line's own strings
	newest  int32
	minutes []bucket
	callers []reportedCaller
}

type reportedCaller struct {
	c           Caller
	first, last int64
	n           uint64
	out         Class
}

// readReported is what a report's line counts of its key; ok is false for
// nothing.
func readReported(w *wireKey, service string, newest int32, lo, hi int64) (k reportedKey, ok bool) {
	var total uint64 // the verifications counted: no caller made more
	for _, m := range w.Minutes {
		at, n := fromWire(m)
		if at <= newest-ReportReach || at > newest+1 {
			continue
		}
		k.minutes = append(k.minutes, bucket{at: at, n: n})
		for _, c := range n[:nClasses] {
			total += uint64(c)
		}
	}
	if total == 0 {
		return k, false
	}
	for _, c := range w.Callers {
		addr, err := netip.ParseAddr(c.Address)
		if err != nil || c.Outcome >= uint8(nClasses) || c.Count == 0 || len(k.callers) == MaxReportedCallers {
			continue
		}
		first, last := min(max(c.First, lo), hi), min(max(c.Last, lo), hi)
		k.callers = append(k.callers, reportedCaller{Caller{addr, Clip(c.UserAgent, MaxUserAgent), service}, min(first, last), last, min(c.Count, total), Class(c.Outcome)})
	}
	k.w, k.newest = w, newest
	return k, true
}

// applyReport counts what readReport read, as verifications made here.
func (o *Outcomes) applyReport(keys []reportedKey) {
	for _, k := range keys {
		sh, a := o.lockDecoded(k.w)
		for i := range k.minutes {
			a.addMinute(k.minutes[i].at, &k.minutes[i].n, k.newest)
			addBucket(&a.pending, k.minutes[i].at, &k.minutes[i].n, 0)
		}
		for _, c := range k.callers {
			a.called(c.c, c.first, c.last, c.n, c.out, true)
		}
		sh.mu.Unlock()
	}
}

// ReportAnswer is what an instance answers a report with.
type ReportAnswer struct {
	Keys  int    `json:"keys"`            // the keys counted
	Error string `json:"error,omitempty"` // why some or all were not
}

// ReportClaims claims a report's id across instances: events.OutcomeStore.
type ReportClaims interface {
	Claim(ctx context.Context, id string, data []byte) (first bool, err error)
}

var _ ReportClaims = (*events.OutcomeStore)(nil)

// maxReportID bounds the Nats-Msg-Id of a report that is remembered; a
// longer one is no id.
const maxReportID = 64

// recentReports is how many reports' ids an instance remembers, to count
// a resent one once.
const recentReports = 1 << 16

// reportIDs are the ids (service and Nats-Msg-Id) of the reports merged
// here lately, the oldest forgotten first.
type reportIDs struct {
	seen map[string]struct{}
	ring []string
	next int
}

func (r *reportIDs) has(id string) bool { _, ok := r.seen[id]; return ok }

func (r *reportIDs) add(id string) {
	if r.seen == nil {
		r.seen, r.ring = map[string]struct{}{}, make([]string, recentReports)
	}
	delete(r.seen, r.ring[r.next])
	r.ring[r.next], r.seen[id] = id, struct{}{}
	r.next = (r.next + 1) % len(r.ring)
}

// maxClaimsPerMinute bounds the claims an instance writes: a verifier
// sends about one report a minute, and every holder of the read-only
// credential may send them.
const maxClaimsPerMinute = 600

// claimBudget counts the claims of the current minute.
type claimBudget struct {
	minute int64
	spent  int
}

// spend takes one claim of now's minute, if any is left.
func (b *claimBudget) spend(now time.Time) bool {
	if m := now.Unix() / 60; m != b.minute {
		b.minute, b.spent = m, 0
	}
	if b.spent == maxClaimsPerMinute {
		return false
	}
	b.spent++
	return true
}

// ServeReports answers the Go verifiers' reports on
// events.UsageReportSubject, one instance each (a queue group), until ctx
// ends: each is merged (MergeReport) and answered. A report is read one
// at a time, however many come. A verifier that had no answer in time
// sends the same report again, under the same Nats-Msg-Id: one merged
// here among the last recentReports, or, with Claims, claimed by any
// instance within the stream's deduplication window, is answered and not
// counted again. A claim is a write into the outcome stream: only a
// report that counts something is claimed, at most maxClaimsPerMinute of
// them; beyond that, and when the claim cannot be made, the report is
// counted (at least once).
func (o *Outcomes) ServeReports(ctx context.Context, nc *nats.Conn, known func(org, id string) bool, log *slog.Logger) error {
	var recent reportIDs // the handler runs one message at a time
	var claims claimBudget
	duplicate := func(m *nats.Msg) {
		raw, _ := json.Marshal(ReportAnswer{Error: "a report already counted (the same " + nats.MsgIdHdr + ")"})
		_ = m.Respond(raw)
	}
	sub, err := nc.QueueSubscribe(events.UsageReportSubject, "keyledger", func(m *nats.Msg) {
		service := m.Header.Get(events.UsageReportServiceHeader)
		id := ""
		if raw := m.Header.Get(nats.MsgIdHdr); raw != "" && len(raw) <= maxReportID && ValidService(service) {
			id = "report " + service + " " + raw
		}
		if id != "" && recent.has(id) {
			duplicate(m)
			return
		}
		keys, err := o.readReport(m.Data, service, known)
		if id != "" && o.Claims != nil && len(keys) > 0 && claims.spend(o.now()) {
			cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			first, cerr := o.Claims.Claim(cctx, id, []byte(batchHeader))
			cancel()
			if cerr == nil && !first {
				recent.add(id)
				duplicate(m)
				return
			}
		}
		o.applyReport(keys)
		n := len(keys)
		if id != "" && (n > 0 || err == nil) {
			recent.add(id)
		}
		answer := ReportAnswer{Keys: n}
		if err != nil {
			answer.Error = err.Error()
			log.Debug("a verifier's usage report", "keys", n, "err", err)
		}
		raw, _ := json.Marshal(answer)
		_ = m.Respond(raw)
	})
	if err != nil {
		return fmt.Errorf("answer usage reports on %s: %w", events.UsageReportSubject, err)
	}
	<-ctx.Done()
	return sub.Drain()
}
