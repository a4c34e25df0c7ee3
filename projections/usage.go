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
	mu    sync.RWMutex
	seen  map[usageRef]int64   // latest use, here or elsewhere, in Unix microseconds
	dirty map[string]time.Time // org/id → uses here not flushed yet
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
	return &Usage{seen: map[usageRef]int64{}, dirty: map[string]time.Time{}}
}

// Touch records a use of org/id at at. It is on the verify path: within a
// minute already recorded it takes only a read lock.
func (u *Usage) Touch(org, id string, at time.Time) {
	ref := usageRef{org, id}
	minute := at.UTC().Truncate(time.Minute)
	us := minute.UnixMicro()
	u.mu.RLock()
	known, ok := u.seen[ref]
	u.mu.RUnlock()
	if ok && us <= known {
		return
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	if known, ok := u.seen[ref]; !ok || us > known {
		u.seen[ref] = us
		u.dirty[org+"/"+id] = minute
	}
}

// Merge folds in a use reported by any instance.
func (u *Usage) Merge(org, id string, at time.Time) {
	ref, us := usageRef{org, id}, at.UnixMicro()
	u.mu.Lock()
	defer u.mu.Unlock()
	if known, ok := u.seen[ref]; !ok || us > known {
		u.seen[ref] = us
	}
}

// LastUsed returns the latest use of org/id known here; zero: never.
func (u *Usage) LastUsed(org, id string) time.Time {
	u.mu.RLock()
	defer u.mu.RUnlock()
	us, ok := u.seen[usageRef{org, id}]
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
