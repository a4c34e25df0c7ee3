package usage

import (
	"cmp"
	"math"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"
)

// Class is a verification outcome counted against a key. NOT_FOUND and
// MALFORMED name no key and are not counted per key.
type Class uint8

// The classes, in the order of Counts.
const (
	Valid      Class = iota // VALID with the key's current secret
	Deprecated              // VALID with a replaced secret in its grace period
	Expired                 // EXPIRED: the key's end, or a replaced secret past its grace
	Revoked                 // REVOKED
	nClasses
)

// replacedIdx counts, beside the classes, the presentations of a replaced
// secret (Deprecated, and Expired past the grace): "who still uses the old
// secret".
const replacedIdx = int(nClasses)

var classNames = [...]string{"valid", "deprecated", "expired", "revoked"}

func (c Class) String() string {
	if c < nClasses {
		return classNames[c]
	}
	return "unknown"
}

// Outcome is what one verification of a key's secret came to.
type Outcome struct {
	Class    Class
	Replaced bool // the secret presented was one a rotation replaced
}

// Caller is who presented a secret: nothing about a person beyond the
// client's address and User-Agent.
type Caller struct {
	Address   netip.Addr // as the rate limits see it: an IPv4 address, an IPv6 /64
	UserAgent string     // at most MaxUserAgent bytes, valid UTF-8
	Service   string     // the in-process verifier's service name; empty over HTTP
}

// Bounds of what is kept.
const (
	MaxCallers = 20 // distinct callers per key, the most recent kept
	// MaxReportedCallers is how many of them may be callers a verifier
	// reported (with a service name).
	MaxReportedCallers = 5
	MaxUserAgent       = 256 // bytes of a User-Agent kept
	MaxService         = 128 // bytes of a service name kept
	// MinuteBuckets and HourBuckets are the minute and hour buckets kept per
	// key: 24 hours and 90 days, each with the current, partial one.
	MinuteBuckets = 24*60 + 1
	HourBuckets   = 90*24 + 1
)

// Clip bounds s to n bytes of valid UTF-8, without allocating when s is
// already so.
func Clip(s string, n int) string {
	if len(s) > n {
		i := n
		for i > 0 && !utf8.RuneStart(s[i]) {
			i--
		}
		s = s[:i]
	}
	if !utf8.ValidString(s) {
		return Clip(strings.ToValidUTF8(s, "\uFFFD"), n)
	}
	return s
}

// counts are one bucket's, by Class and then replacedIdx.
type counts [nClasses + 1]uint32

// bucket is the counts of one minute or hour (at: Unix minutes or hours).
type bucket struct {
	at int32
	n  counts
}

type callerStat struct {
	Caller
	first, last int64 // Unix seconds
	count       uint64
	outcome     Class
	pending     uint32 // of count, not published yet
}

// keyAgg is one key's aggregates. A key takes memory only once it has
// counts, and each of its lists only the buckets that have some.
type keyAgg struct {
	minutes, hours []bucket
	pending        []bucket // minutes recorded here and not published yet
	callers        []callerStat
}

type oshard struct {
	mu   sync.Mutex
	keys map[ref]*keyAgg
	_    [40]byte
}

// Outcomes holds, per key, its verification outcomes by minute for a day
// and by hour for 90 days, and its recent callers: those recorded here and
// those other instances published. See Record, and Run for the sharing.
type Outcomes struct {
	shards [shards]oshard
	// Now is the clock buckets are kept against; time.Now when nil.
	Now func() time.Time
	// PendingWithinReach keeps at most ReportReach of the minutes recorded
	// here and not published yet: a verifier's, whose reports keyledger
	// counts only that far back, and which may not be taken for long (no
	// instance answering). An instance keeps every one: its hours take
	// older ones.
	PendingWithinReach bool
	// MaxReportedKeys bounds the keys verifiers' reports may count within
	// ReportReach (DefaultMaxReportedKeys when zero): a report is the word
	// of any holder of the read-only credential, and each key it names
	// takes memory here.
	MaxReportedKeys int

	reportedMu     sync.Mutex
	reported       map[ref]int32 // key → the last minute a report counted it
	reportsRefused atomic.Int64
	// Claims, when set, is asked to claim a verifier's report by its id
	// before it is counted, so that a resend another instance gets is not
	// counted again (events.OutcomeStore: the outcome stream's
	// deduplication); nil: only the ids this instance merged lately.
	Claims ReportClaims

	share sharing
}

// NewOutcomes returns empty aggregates.
func NewOutcomes() *Outcomes {
	o := &Outcomes{}
	for i := range o.shards {
		o.shards[i].keys = map[ref]*keyAgg{}
	}
	return o
}

func (o *Outcomes) now() time.Time {
	if o.Now != nil {
		return o.Now()
	}
	return time.Now()
}

func (o *Outcomes) shard(r ref) *oshard {
	var h uint32 = 2166136261
	for i := max(0, len(r.id)-8); i < len(r.id); i++ {
		h = (h ^ uint32(r.id[i])) * 16777619
	}
	return &o.shards[h%shards]
}

// Record counts one verification of org/id's secret by c at at. It is on
// the verify path: in the steady state (a key and caller already known, a
// minute already begun) it allocates nothing and holds one shard's lock
// for a few additions.
func (o *Outcomes) Record(org, id string, out Outcome, c Caller, at time.Time) {
	if out.Class >= nClasses {
		return
	}
	c.UserAgent, c.Service = Clip(c.UserAgent, MaxUserAgent), Clip(c.Service, MaxService)
	var n counts
	n[out.Class] = 1
	if out.Replaced {
		n[replacedIdx] = 1
	}
	sec := at.Unix()
	minute := int32(sec / 60)
	r := ref{org, id}
	sh := o.shard(r)
	sh.mu.Lock()
	a := sh.keys[r]
	if a == nil {
		a = &keyAgg{}
		sh.keys[ref{strings.Clone(org), strings.Clone(id)}] = a
	}
	a.addMinute(minute, &n, minute)
	var stale int32
	if o.PendingWithinReach {
		stale = minute - ReportReach
	}
	addBucket(&a.pending, minute, &n, stale)
	a.called(c, sec, sec, 1, out.Class, true)
	sh.mu.Unlock()
}

// addMinute adds n to the minute and to its hour, and keeps only the
// buckets of the day and of the 90 days before newest.
func (a *keyAgg) addMinute(minute int32, n *counts, newest int32) {
	if minute > newest-MinuteBuckets {
		addBucket(&a.minutes, minute, n, minute-MinuteBuckets)
	}
	if hour := minute / 60; hour > newest/60-HourBuckets {
		addBucket(&a.hours, hour, n, hour-HourBuckets)
	}
}

// addBucket adds n to the bucket at in l, which is ordered by at. A
// bucket at or before expired is dropped when l must grow: the memory of
// a key in steady use stays put.
func addBucket(l *[]bucket, at int32, n *counts, expired int32) {
	b := *l
	if k := len(b); k > 0 && b[k-1].at == at {
		b[k-1].n.add(n, 1)
		return
	}
	if k := len(b); k == 0 || b[k-1].at < at {
		if k == cap(b) && k > 0 {
			drop, _ := slices.BinarySearchFunc(b, expired+1, func(x bucket, t int32) int { return cmp.Compare(x.at, t) })
			if drop > 0 {
				b = b[:copy(b, b[drop:])]
			}
		}
		*l = append(b, bucket{at: at, n: *n})
		return
	}
	i, found := slices.BinarySearchFunc(b, at, func(x bucket, t int32) int { return cmp.Compare(x.at, t) })
	if found {
		b[i].n.add(n, 1)
		return
	}
	*l = slices.Insert(b, i, bucket{at: at, n: *n})
}

// add adds sign×m to c, never below zero.
func (c *counts) add(m *counts, sign int64) {
	for i := range c {
		c[i] = uint32(max(0, min(int64(c[i])+sign*int64(m[i]), 1<<32-1)))
	}
}

// called notes a call (or n of them, merged) by c between first and last,
// keeping the MaxCallers most recent callers. Calls counted here are
// pending, in 32 bits: past 2^32-1 pending a caller's calls saturate, so
// that what the flush publishes is what this instance counts.
func (a *keyAgg) called(c Caller, first, last int64, n uint64, out Class, local bool) {
	for i := range a.callers {
		s := &a.callers[i]
		if s.Caller != c {
			continue
		}
		s.first = min(s.first, first)
		if last >= s.last {
			s.last, s.outcome = last, out
		}
		if local {
			n = min(n, math.MaxUint32-uint64(s.pending))
			s.pending += uint32(n)
		}
		s.count += n
		return
	}
	if local {
		n = min(n, math.MaxUint32)
	}
	s := callerStat{Caller: Caller{c.Address, strings.Clone(c.UserAgent), strings.Clone(c.Service)}, first: first, last: last, count: n, outcome: out}
	if local {
		s.pending = uint32(n)
	}
	if s.Service != "" {
		// A caller a verifier reported: a report is the word of any holder
		// of the read-only credential, so such callers take at most
		// MaxReportedCallers of a key's places, the most recent kept, and
		// never push out a caller keyledger saw itself.
		n, oldest := 0, -1
		for i := range a.callers {
			if a.callers[i].Service != "" {
				if n++; oldest < 0 || a.callers[i].last < a.callers[oldest].last {
					oldest = i
				}
			}
		}
		if n >= MaxReportedCallers {
			if a.callers[oldest].last <= last {
				a.callers[oldest] = s
			}
			return
		}
	}
	if len(a.callers) < MaxCallers {
		a.callers = append(a.callers, s)
		return
	}
	oldest := 0
	for i := range a.callers {
		if a.callers[i].last < a.callers[oldest].last {
			oldest = i
		}
	}
	if a.callers[oldest].last <= last {
		a.callers[oldest] = s
	}
}

// Counts are a key's verifications in some span, by outcome; Replaced is
// how many of the Deprecated and Expired presented a replaced secret.
type Counts struct {
	Valid, Deprecated, Expired, Revoked, Replaced uint64
}

func (c *Counts) add(n *counts) {
	c.Valid += uint64(n[Valid])
	c.Deprecated += uint64(n[Deprecated])
	c.Expired += uint64(n[Expired])
	c.Revoked += uint64(n[Revoked])
	c.Replaced += uint64(n[replacedIdx])
}

// Add adds d to c.
func (c *Counts) Add(d Counts) {
	c.Valid += d.Valid
	c.Deprecated += d.Deprecated
	c.Expired += d.Expired
	c.Revoked += d.Revoked
	c.Replaced += d.Replaced
}

// Total is every verification counted.
func (c Counts) Total() uint64 { return c.Valid + c.Deprecated + c.Expired + c.Revoked }

// Series returns org/id's counts in n contiguous buckets of step, the
// first beginning at from (a multiple of step). A step under an hour
// reads the minute buckets, which reach back 24 hours; any other the hour
// buckets, which reach back 90 days.
func (o *Outcomes) Series(org, id string, from time.Time, step time.Duration, n int) []Counts {
	out := make([]Counts, n)
	r := ref{org, id}
	sh := o.shard(r)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	a := sh.keys[r]
	if a == nil {
		return out
	}
	src, unit := a.hours, int64(3600)
	if step < time.Hour {
		src, unit = a.minutes, 60
	}
	start, width := from.Unix(), int64(step/time.Second)
	for i := range src {
		t := int64(src[i].at) * unit
		if t < start {
			continue
		}
		j := (t - start) / width
		if j >= int64(n) {
			break
		}
		out[j].add(&src[i].n)
	}
	return out
}

// Totals returns org/id's counts from since on: by the minute within the
// last 24 hours, by the hour before.
func (o *Outcomes) Totals(org, id string, since time.Time) Counts {
	var c Counts
	r := ref{org, id}
	sh := o.shard(r)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	a := sh.keys[r]
	if a == nil {
		return c
	}
	src, unit := a.hours, int64(3600)
	if !since.Before(o.now().Add(-24 * time.Hour)) {
		src, unit = a.minutes, 60
	}
	cut := since.Unix()
	for i := range src {
		if int64(src[i].at)*unit+unit > cut {
			c.add(&src[i].n)
		}
	}
	return c
}

// CallerStat is one recent caller of a key.
type CallerStat struct {
	Caller
	FirstSeen, LastSeen time.Time
	Count               uint64
	LastOutcome         Class
}

// Callers returns org/id's recent callers, the latest first.
func (o *Outcomes) Callers(org, id string) []CallerStat {
	r := ref{org, id}
	sh := o.shard(r)
	sh.mu.Lock()
	a := sh.keys[r]
	var out []CallerStat
	if a != nil {
		out = make([]CallerStat, len(a.callers))
		for i, s := range a.callers {
			out[i] = CallerStat{Caller: s.Caller, FirstSeen: time.Unix(s.first, 0).UTC(), LastSeen: time.Unix(s.last, 0).UTC(), Count: s.count, LastOutcome: s.outcome}
		}
	}
	sh.mu.Unlock()
	slices.SortStableFunc(out, func(a, b CallerStat) int { return b.LastSeen.Compare(a.LastSeen) })
	return out
}

// Known is how many keys have aggregates here.
func (o *Outcomes) Known() int {
	n := 0
	for i := range o.shards {
		sh := &o.shards[i]
		sh.mu.Lock()
		n += len(sh.keys)
		sh.mu.Unlock()
	}
	return n
}
