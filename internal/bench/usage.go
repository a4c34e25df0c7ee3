package bench

import (
	"context"
	"fmt"
	"io"
	"path/filepath"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/keyledger/keyledger/domain"
	"github.com/keyledger/keyledger/events"
	"github.com/keyledger/keyledger/events/natsembed"
	"github.com/keyledger/keyledger/usage"
)

// usageInstance is one instance's usage on its own connection to the
// embedded server.
type usageInstance struct {
	js    jetstream.JetStream
	store *events.UsageStore
	uses  *usage.Tracker
}

func newUsageInstance(ctx context.Context, emb *natsembed.Server) (*usageInstance, error) {
	nc, err := nats.Connect("", nats.InProcessServer(emb.Server))
	if err != nil {
		return nil, err
	}
	context.AfterFunc(ctx, nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, err
	}
	store, err := events.OpenUsage(ctx, js, 1, nil)
	if err != nil {
		return nil, err
	}
	in := &usageInstance{js: js, store: store, uses: usage.New()}
	go func() { _ = store.Watch(ctx, in.uses.Merge) }()
	return in, nil
}

// knowsAll waits until in knows n keys, and says when.
func (in *usageInstance) knowsAll(ctx context.Context, n int, within time.Duration) (time.Time, error) {
	deadline := time.Now().Add(within)
	for in.uses.Known() < n {
		if time.Now().After(deadline) || ctx.Err() != nil {
			return time.Time{}, fmt.Errorf("an instance learned %d of %d keys' uses in %s", in.uses.Known(), n, within)
		}
		time.Sleep(2 * time.Millisecond)
	}
	return time.Now(), nil
}

// usageFlush records one use of every key on instance A, as serve does on
// a verification, and measures A's flush against serve's default interval
// and against raw asynchronous publishes of as many messages of the same
// size; then how soon instance B has merged them all, and a start of
// instance C from the rollup. On the embedded default: every write synced.
func usageFlush(ctx context.Context, o Options, _ *fixture) ([]Row, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	emb, err := natsembed.Start(natsembed.Config{Dir: filepath.Join(o.Dir, "usage"), Fsync: true, Logger: o.Logger})
	if err != nil {
		return nil, err
	}
	defer emb.Close()
	a, err := newUsageInstance(ctx, emb)
	if err != nil {
		return nil, err
	}
	b, err := newUsageInstance(ctx, emb)
	if err != nil {
		return nil, err
	}
	n := o.Keys
	minute := time.Now().UTC().Truncate(time.Minute)
	for i := range n {
		a.uses.Touch(fmt.Sprintf("org-%d", i%100), domain.NewKeyID(), minute)
	}
	const interval = time.Minute // serve's --usage-flush-interval
	start := time.Now()
	fctx, fcancel := context.WithTimeout(ctx, interval)
	res, err := a.uses.Flush(fctx, a.store)
	fcancel()
	if err != nil {
		return nil, err
	}
	took := time.Since(start)
	merged, err := b.knowsAll(ctx, n, 2*interval)
	if err != nil {
		return nil, err
	}

	raw, err := rawAsyncPublish(ctx, a.js, res.Messages, res.Bytes/max(res.Messages, 1))
	if err != nil {
		return nil, err
	}
	perKey, perKeyN, err := perKeyPuts(ctx, a.js, min(n, 10000))
	if err != nil {
		return nil, err
	}
	perKeyAll := perKey * time.Duration(n) / time.Duration(perKeyN)

	rstart := time.Now()
	_, rollup, err := a.uses.Rollup(ctx, a.store, true)
	if err != nil {
		return nil, err
	}
	rolled := time.Since(rstart)
	obs, err := a.js.ObjectStore(ctx, events.UsageRollupBucket)
	if err != nil {
		return nil, err
	}
	rawRead := time.Now()
	r, err := obs.Get(ctx, events.UsageRollupObject)
	if err != nil {
		return nil, err
	}
	if _, err := io.Copy(io.Discard, r); err != nil {
		return nil, err
	}
	r.Close()
	rawReadTook := time.Since(rawRead)
	cstart := time.Now()
	c, err := newUsageInstance(ctx, emb)
	if err != nil {
		return nil, err
	}
	known, err := c.knowsAll(ctx, n, 2*interval)
	if err != nil {
		return nil, err
	}
	startTook := known.Sub(cstart)

	target := interval / 10
	return []Row{{
		Scenario: fmt.Sprintf("usage flush, %s keys used: instance A's flush", count(float64(n))),
		Figure:   fmt.Sprintf("%s, %d messages, %.1f MB, %s carried", dur(took), res.Messages, float64(res.Bytes)/1e6, count(float64(res.Carried))),
		Baseline: fmt.Sprintf("raw async publish of as many: %s (per-key sync Put, as before: %s, from %s keys)", dur(raw), dur(perKeyAll), count(float64(perKeyN))),
		Ratio:    took.Seconds() / raw.Seconds(), Target: "≤ 6 s (a tenth of the 1m interval)", Met: took <= target && res.Carried == 0,
	}, {
		Scenario: "usage flush: instance B has merged every use",
		Figure:   dur(merged.Sub(start)),
		Baseline: fmt.Sprintf("A's flush: %s", dur(took)),
		Ratio:    merged.Sub(start).Seconds() / took.Seconds(), Target: "≤ 1m (the interval)", Met: merged.Sub(start) <= interval,
	}, {
		Scenario: "usage rollup, then a new instance C knows every use",
		Figure:   fmt.Sprintf("rollup %s (%.1f MB); C %s", dur(rolled), float64(rollup.Bytes)/1e6, dur(startTook)),
		Baseline: fmt.Sprintf("raw read of the rollup: %s", dur(rawReadTook)),
		Ratio:    startTook.Seconds() / rawReadTook.Seconds(), Target: "C ≤ 3 s", Met: startTook <= 3*time.Second,
	}}, nil
}

// rawAsyncPublish publishes msgs messages of size bytes to a plain stream
// on the same server, 16 awaiting their acknowledgement at most, as a flush
// does, and returns how long until the last was acknowledged.
func rawAsyncPublish(ctx context.Context, js jetstream.JetStream, msgs, size int) (time.Duration, error) {
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "BENCH_RAW_USAGE", Subjects: []string{"bench.raw.usage"}, Storage: jetstream.FileStorage}); err != nil {
		return 0, err
	}
	payload := make([]byte, size)
	const window = 16
	var pending []jetstream.PubAckFuture
	wait := func(f jetstream.PubAckFuture) error {
		select {
		case <-f.Ok():
			return nil
		case err := <-f.Err():
			return err
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	start := time.Now()
	for range msgs {
		if len(pending) == window {
			if err := wait(pending[0]); err != nil {
				return 0, err
			}
			pending = pending[1:]
		}
		f, err := js.PublishAsync("bench.raw.usage", payload)
		if err != nil {
			return 0, err
		}
		pending = append(pending, f)
	}
	for _, f := range pending {
		if err := wait(f); err != nil {
			return 0, err
		}
	}
	return time.Since(start), nil
}

// perKeyPuts is how the flush worked before: one synchronous Put per key
// into a key-value bucket. It runs on n keys, for an estimate.
func perKeyPuts(ctx context.Context, js jetstream.JetStream, n int) (time.Duration, int, error) {
	kv, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "BENCH_PER_KEY_USAGE", History: 1, Storage: jetstream.FileStorage})
	if err != nil {
		return 0, 0, err
	}
	at := time.Now().UTC().Truncate(time.Minute).Format(time.RFC3339)
	start := time.Now()
	for i := range n {
		if _, err := kv.PutString(ctx, fmt.Sprintf("org-%d.%s", i%100, domain.NewKeyID()), at); err != nil {
			return 0, 0, err
		}
	}
	return time.Since(start), n, nil
}
