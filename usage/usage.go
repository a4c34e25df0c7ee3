// Package usage knows when each key was last used, to the minute, on
// every instance. A successful verification is recorded in memory only — a
// use is not an event, and the audit stream must not grow with traffic —
// and shared at most once per interval in batches of many keys, which
// every instance merges back, so that each shows the latest use seen
// anywhere. Now and then one instance rolls everything it knows up into
// one object, so that a start reads that and a bounded tail of batches
// rather than every batch ever written.
package usage

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/keyledger/keyledger/events"
)

// Tracker holds the latest use of every key known here, and the uses seen
// here not shared yet.
type Tracker struct {
	// seen is sharded by key: verifications on many connections at once
	// then rarely wait on one another's lock.
	seen [shards]shard

	mu     sync.Mutex
	dirty  map[string]map[string]int64 // org → id → Unix minute, not flushed yet
	ndirty int

	// MaxPerFlush bounds the uses one flush sends (default
	// DefaultMaxPerFlush); the rest wait for the next.
	MaxPerFlush int

	stats struct {
		flushes, flushed, carried, failed atomic.Int64
		lastTook, lastCarried             atomic.Int64 // nanoseconds; uses
	}
}

// DefaultMaxPerFlush is a flush's bound: a million keys is about 31 MB in
// 119 messages, sent in 0.7–1.3 s on the bench's machine with every write
// synced (docs/PERFORMANCE.md), far inside the least interval, a minute.
const DefaultMaxPerFlush = 1_000_000

const shards = 64

type shard struct {
	mu   sync.RWMutex
	seen map[ref]int64 // latest use, here or elsewhere, in Unix microseconds
	_    [32]byte      // a cache line of its own
}

func (u *Tracker) shard(r ref) *shard {
	var h uint32 = 2166136261 // FNV-1a over the id's last bytes: they vary most
	id := r.id
	for i := max(0, len(id)-8); i < len(id); i++ {
		h = (h ^ uint32(id[i])) * 16777619
	}
	return &u.seen[h%shards]
}

// ref names a key without building a string: Touch is on the verify path.
type ref struct{ org, id string }

// Sink is where instances share uses: events.UsageStore.
type Sink interface {
	Flush(ctx context.Context, uses []events.KeyUse) (events.FlushStats, error)
	Watch(ctx context.Context, fn func(org, id string, at time.Time)) error
}

// Roller is a Sink that also keeps a rollup.
type Roller interface {
	RollupAge(ctx context.Context) (time.Duration, bool, error)
	PutRollup(ctx context.Context, snapshot func() []events.KeyUse) (events.FlushStats, error)
}

var _ Sink = (*events.UsageStore)(nil)
var _ Roller = (*events.UsageStore)(nil)

// New returns an empty tracker.
func New() *Tracker {
	u := &Tracker{dirty: map[string]map[string]int64{}}
	for i := range u.seen {
		u.seen[i].seen = map[ref]int64{}
	}
	return u
}

// Touch records a use of org/id at at. It is on the verify path: within a
// minute already recorded it takes only a read lock.
func (u *Tracker) Touch(org, id string, at time.Time) {
	r := ref{org, id}
	minute := at.UTC().Truncate(time.Minute)
	us := minute.UnixMicro()
	sh := u.shard(r)
	sh.mu.RLock()
	known, ok := sh.seen[r]
	sh.mu.RUnlock()
	if ok && us <= known {
		return
	}
	sh.mu.Lock()
	known, ok = sh.seen[r]
	if ok && us <= known {
		sh.mu.Unlock()
		return
	}
	sh.seen[r] = us
	sh.mu.Unlock()
	u.mu.Lock()
	u.markDirty(org, id, minute.Unix()/60)
	u.mu.Unlock()
}

// markDirty keeps the later of two unflushed uses; u.mu is held.
func (u *Tracker) markDirty(org, id string, minute int64) {
	ids := u.dirty[org]
	if ids == nil {
		ids = map[string]int64{}
		u.dirty[org] = ids
	}
	known, ok := ids[id]
	if !ok {
		u.ndirty++
	}
	if !ok || minute > known {
		ids[id] = minute
	}
}

// Merge folds in a use reported by any instance.
func (u *Tracker) Merge(org, id string, at time.Time) {
	r, us := ref{org, id}, at.UnixMicro()
	sh := u.shard(r)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	known, ok := sh.seen[r]
	if !ok {
		// The strings may be parts of a message: keep copies, not it.
		sh.seen[ref{strings.Clone(org), strings.Clone(id)}] = us
	} else if us > known {
		sh.seen[r] = us
	}
}

// LastUsed returns the latest use of org/id known here; zero: never.
func (u *Tracker) LastUsed(org, id string) time.Time {
	r := ref{org, id}
	sh := u.shard(r)
	sh.mu.RLock()
	defer sh.mu.RUnlock()
	us, ok := sh.seen[r]
	if !ok {
		return time.Time{}
	}
	return time.UnixMicro(us).UTC()
}

// Known is how many keys have a last use here.
func (u *Tracker) Known() int {
	n := 0
	for i := range u.seen {
		sh := &u.seen[i]
		sh.mu.RLock()
		n += len(sh.seen)
		sh.mu.RUnlock()
	}
	return n
}

// Pending is how many uses wait for a flush.
func (u *Tracker) Pending() int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.ndirty
}

// FlushResult is what one flush did.
type FlushResult struct {
	events.FlushStats
	Carried int // uses left for the next flush: over the bound, or failed
	Took    time.Duration
}

// Flush sends at most MaxPerFlush of the uses recorded here since the last
// flush; the others, and all of them on failure, are kept for the next.
func (u *Tracker) Flush(ctx context.Context, sink Sink) (FlushResult, error) {
	start := time.Now()
	batch := u.take()
	var res FlushResult
	var err error
	if len(batch) > 0 {
		res.FlushStats, err = sink.Flush(ctx, batch)
		if err != nil {
			u.mu.Lock()
			for _, b := range batch {
				u.markDirty(b.Org, b.ID, b.At.Unix()/60)
			}
			u.mu.Unlock()
			u.stats.failed.Add(1)
		}
	}
	res.Carried, res.Took = u.Pending(), time.Since(start)
	u.stats.flushes.Add(1)
	if err == nil {
		u.stats.flushed.Add(int64(len(batch)))
	}
	u.stats.carried.Add(int64(res.Carried))
	u.stats.lastTook.Store(int64(res.Took))
	u.stats.lastCarried.Store(int64(res.Carried))
	return res, err
}

// take removes up to MaxPerFlush uses from the unflushed ones, org by org.
func (u *Tracker) take() []events.KeyUse {
	limit := u.MaxPerFlush
	if limit <= 0 {
		limit = DefaultMaxPerFlush
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	batch := make([]events.KeyUse, 0, min(limit, u.ndirty))
	for org, ids := range u.dirty {
		for id, minute := range ids {
			if len(batch) == limit {
				return batch
			}
			batch = append(batch, events.KeyUse{Org: org, ID: id, At: time.Unix(minute*60, 0).UTC()})
			delete(ids, id)
			u.ndirty--
		}
		delete(u.dirty, org)
	}
	return batch
}

// Stats are the flushes so far, for /metrics.
type Stats struct {
	Flushes, Flushed, Carried, Failed int64 // Carried: summed over flushes
	LastTook                          time.Duration
	LastCarried                       int64
	Pending                           int
}

// Stats reads them.
func (u *Tracker) Stats() Stats {
	return Stats{
		Flushes: u.stats.flushes.Load(), Flushed: u.stats.flushed.Load(),
		Carried: u.stats.carried.Load(), Failed: u.stats.failed.Load(),
		LastTook: time.Duration(u.stats.lastTook.Load()), LastCarried: u.stats.lastCarried.Load(),
		Pending: u.Pending(),
	}
}

// Snapshot returns every last use known here from since on, org by org,
// and forgets the older ones: what a rollup holds.
func (u *Tracker) Snapshot(since time.Time) []events.KeyUse {
	cut := since.UnixMicro()
	byOrg := map[string][]events.KeyUse{}
	for i := range u.seen {
		sh := &u.seen[i]
		sh.mu.Lock()
		for r, us := range sh.seen {
			if us < cut {
				delete(sh.seen, r)
				continue
			}
			byOrg[r.org] = append(byOrg[r.org], events.KeyUse{Org: r.org, ID: r.id, At: time.UnixMicro(us).UTC()})
		}
		sh.mu.Unlock()
	}
	n := 0
	for _, l := range byOrg {
		n += len(l)
	}
	all := make([]events.KeyUse, 0, n)
	for _, l := range byOrg {
		all = append(all, l...)
	}
	return all
}

// Rollup writes the rollup if no instance has for most of
// events.UsageRollupEvery; it reports whether it did.
func (u *Tracker) Rollup(ctx context.Context, r Roller, force bool) (bool, events.FlushStats, error) {
	if !force {
		age, ok, err := r.RollupAge(ctx)
		if err != nil {
			return false, events.FlushStats{}, err
		}
		if ok && age < events.UsageRollupEvery*9/10 {
			return false, events.FlushStats{}, nil // another instance wrote it
		}
	}
	st, err := r.PutRollup(ctx, func() []events.KeyUse { return u.Snapshot(time.Now().Add(-events.UsageRetention)) })
	return err == nil, st, err
}

// Run merges what the sink reports and flushes every interval until ctx
// ends, then flushes once more. Each flush may take at most the interval;
// one that leaves uses for the next says so. If the sink keeps a rollup,
// it is written every events.UsageRollupEvery by whichever instance finds
// it oldest, and by each instance as it stops.
func (u *Tracker) Run(ctx context.Context, sink Sink, every time.Duration, log *slog.Logger) {
	go func() {
		for ctx.Err() == nil {
			if err := sink.Watch(ctx, u.Merge); err != nil && ctx.Err() == nil {
				log.Warn("watching key usage; retrying", "err", err)
				select {
				case <-ctx.Done():
				case <-time.After(5 * time.Second):
				}
			}
		}
	}()
	roller, _ := sink.(Roller)
	tick := time.NewTicker(every)
	defer tick.Stop()
	roll := time.NewTicker(events.UsageRollupEvery)
	defer roll.Stop()
	for {
		select {
		case <-tick.C:
			fctx, cancel := context.WithTimeout(ctx, every)
			res, err := u.Flush(fctx, sink)
			cancel()
			switch {
			case err != nil:
				log.Warn("flushing key usage; will retry", "err", err, "carried", res.Carried)
			case res.Carried > 0:
				log.Warn("key usage flush fell behind: uses left for the next flush", "sent", res.Uses, "carried", res.Carried, "took", res.Took)
			}
		case <-roll.C:
			if roller == nil {
				continue
			}
			rctx, cancel := context.WithTimeout(ctx, every)
			if _, _, err := u.Rollup(rctx, roller, false); err != nil {
				log.Warn("writing the key usage rollup; will retry", "err", err)
			}
			cancel()
		case <-ctx.Done():
			fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			if _, err := u.Flush(fctx, sink); err != nil {
				log.Warn("final flush of key usage failed", "err", err)
			}
			if roller != nil {
				if _, _, err := u.Rollup(fctx, roller, true); err != nil {
					log.Warn("final key usage rollup failed", "err", err)
				}
			}
			cancel()
			return
		}
	}
}
