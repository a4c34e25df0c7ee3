package projections

import (
	"context"
	"log/slog"
	"sync"
	"time"
)

// Usage knows when each key was last used, to the minute. A successful
// verification is recorded in memory only — a use is not an event, and the
// audit stream must not grow with traffic — and flushed at most once per
// interval to a bucket shared by every instance, whose contents are merged
// back so that each instance shows the latest use seen anywhere.
type Usage struct {
	// seen is sharded by key: verifications on many connections at once
	// then rarely wait on one another's lock.
	seen [usageShards]usageShard

	mu    sync.Mutex
	dirty map[string]time.Time // org/id → uses here not flushed yet
}

const usageShards = 64

type usageShard struct {
	mu   sync.RWMutex
	seen map[usageRef]int64 // latest use, here or elsewhere, in Unix microseconds
	_    [32]byte           // a cache line of its own
}

func (u *Usage) shard(ref usageRef) *usageShard {
	var h uint32 = 2166136261 // FNV-1a over the id's last bytes: they vary most
	id := ref.id
	for i := max(0, len(id)-8); i < len(id); i++ {
		h = (h ^ uint32(id[i])) * 16777619
	}
	return &u.seen[h%usageShards]
}

// usageRef names a key without building a string: Touch is on the verify
// path.
type usageRef struct{ org, id string }

// UsageSink is the shared bucket.
type UsageSink interface {
	Flush(ctx context.Context, uses map[string]time.Time) error
	Watch(ctx context.Context, fn func(org, id string, at time.Time)) error
}

// NewUsage returns an empty tracker.
func NewUsage() *Usage {
	u := &Usage{dirty: map[string]time.Time{}}
	for i := range u.seen {
		u.seen[i].seen = map[usageRef]int64{}
	}
	return u
}

// Touch records a use of org/id at at. It is on the verify path: within a
// minute already recorded it takes only a read lock.
func (u *Usage) Touch(org, id string, at time.Time) {
	ref := usageRef{org, id}
	minute := at.UTC().Truncate(time.Minute)
	us := minute.UnixMicro()
	sh := u.shard(ref)
	sh.mu.RLock()
	known, ok := sh.seen[ref]
	sh.mu.RUnlock()
	if ok && us <= known {
		return
	}
	sh.mu.Lock()
	known, ok = sh.seen[ref]
	if ok && us <= known {
		sh.mu.Unlock()
		return
	}
	sh.seen[ref] = us
	sh.mu.Unlock()
	u.mu.Lock()
	if minute.After(u.dirty[org+"/"+id]) {
		u.dirty[org+"/"+id] = minute
	}
	u.mu.Unlock()
}

// Merge folds in a use reported by any instance.
func (u *Usage) Merge(org, id string, at time.Time) {
	ref, us := usageRef{org, id}, at.UnixMicro()
	sh := u.shard(ref)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if known, ok := sh.seen[ref]; !ok || us > known {
		sh.seen[ref] = us
	}
}

// LastUsed returns the latest use of org/id known here; zero: never.
func (u *Usage) LastUsed(org, id string) time.Time {
	ref := usageRef{org, id}
	sh := u.shard(ref)
	sh.mu.RLock()
	defer sh.mu.RUnlock()
	us, ok := sh.seen[ref]
	if !ok {
		return time.Time{}
	}
	return time.UnixMicro(us).UTC()
}

// Flush writes the uses recorded here since the last flush. On failure they
// are kept for the next one.
func (u *Usage) Flush(ctx context.Context, sink UsageSink) error {
	u.mu.Lock()
	batch := u.dirty
	u.dirty = map[string]time.Time{}
	u.mu.Unlock()
	if len(batch) == 0 {
		return nil
	}
	if err := sink.Flush(ctx, batch); err != nil {
		u.mu.Lock()
		for ref, at := range batch {
			if at.After(u.dirty[ref]) {
				u.dirty[ref] = at
			}
		}
		u.mu.Unlock()
		return err
	}
	return nil
}

// Run merges what the sink reports and flushes every interval until ctx
// ends, then flushes once more.
func (u *Usage) Run(ctx context.Context, sink UsageSink, every time.Duration, log *slog.Logger) {
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
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		select {
		case <-tick.C:
			if err := u.Flush(ctx, sink); err != nil {
				log.Warn("flushing key usage; will retry", "err", err)
			}
		case <-ctx.Done():
			fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			if err := u.Flush(fctx, sink); err != nil {
				log.Warn("final flush of key usage failed", "err", err)
			}
			cancel()
			return
		}
	}
}
