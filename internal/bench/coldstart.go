package bench

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"runtime"
	"syscall"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/keyledger/keyledger/events"
	"github.com/keyledger/keyledger/projections"
)

// cpuTime is the CPU time this process has used, user and system: the
// embedded nats-server's included.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// heap returns the live heap after a full collection.
func heap() uint64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

// coldStart fills a stream with the fixture's keys and times the ways to a
// ready instance: from a snapshot, by full replay, and a raw ordered
// consumer draining the same stream. It also measures the memory the
// projections and the embedded nats-server hold per key.
func coldStart(ctx context.Context, o Options, f *fixture) ([]Row, error) {
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	n := len(f.created)
	before := heap()
	emb, err := events.StartEmbedded(events.EmbeddedConfig{Dir: filepath.Join(o.Dir, "cold"), Logger: quiet})
	if err != nil {
		return nil, err
	}
	defer emb.Close()
	js, _ := jetstream.New(emb.Conn)
	store, err := events.Open(ctx, js, events.Config{Logger: quiet})
	if err != nil {
		return nil, err
	}
	for i, e := range f.created {
		body, _ := events.Encode(e)
		if _, err := js.PublishAsync(events.Subject(e.OrgID, e.KeyID, e.Type), body); err != nil {
			return nil, err
		}
		if i%10000 == 9999 || i == n-1 {
			select {
			case <-js.PublishAsyncComplete():
			case <-time.After(2 * time.Minute):
				return nil, fmt.Errorf("publishing %d events took too long", n)
			}
		}
	}
	// The server runs in this process: what the heap kept after filling the
	// stream (the client's garbage collected) is the server's.
	serverShare := float64(heap()-min(before, heap())) / float64(n)

	// The raw drain: one ordered consumer reading every message.
	stream, _ := js.Stream(ctx, events.StreamName)
	start, cpuStart := time.Now(), cpuTime()
	c, err := stream.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{})
	if err != nil {
		return nil, err
	}
	it, err := c.Messages()
	if err != nil {
		return nil, err
	}
	for range n {
		if _, err := it.Next(); err != nil {
			return nil, err
		}
	}
	it.Stop()
	drain, drainCPU := time.Since(start), cpuTime()-cpuStart

	// Full replay, as a start without a snapshot.
	cpuStart = cpuTime()
	replay, table, err := readyIn(ctx, store, quiet, nil)
	if err != nil {
		return nil, err
	}
	replayCPU := cpuTime() - cpuStart
	snaps, err := events.OpenSnapshots(ctx, js, store, 1)
	if err != nil {
		return nil, err
	}
	last, _ := store.LastSeq(ctx)
	hash, _ := snaps.MsgHash(ctx, last)
	if err := (&projections.Snapshotter{Store: snaps, Table: table, Logger: quiet}).SaveNow(last, hash); err != nil {
		return nil, err
	}
	fromSnapshot, _, err := readyIn(ctx, store, quiet, snaps)
	if err != nil {
		return nil, err
	}
	replayRatio := rate(n, replay) / rate(n, drain)
	rows := []Row{
		{Scenario: fmt.Sprintf("cold start, %s keys: ready from a snapshot", count(float64(n))), Figure: dur(fromSnapshot),
			Baseline: "raw drain: " + dur(drain), Ratio: float64(fromSnapshot) / float64(drain), Target: "≤ 3 s", Met: fromSnapshot <= 3*time.Second},
		{Scenario: fmt.Sprintf("cold start, %s keys: full replay", count(float64(n))),
			Figure:   fmt.Sprintf("%s (%s events/s, %.1f cores busy)", dur(replay), count(rate(n, replay)), replayCPU.Seconds()/replay.Seconds()),
			Baseline: fmt.Sprintf("raw drain: %s events/s (%.1f cores busy)", count(rate(n, drain)), drainCPU.Seconds()/drain.Seconds()),
			Ratio:    replayRatio, Target: "≥ 0.8 × drain rate", Met: replayRatio >= 0.8},
	}
	f.serverBytesPerKey = serverShare
	return rows, nil
}

// readyIn starts projections on store, from a snapshot when snaps is not
// nil, and returns how long until they were ready.
func readyIn(ctx context.Context, store *events.Store, log *slog.Logger, snaps *events.Snapshots) (time.Duration, *projections.Table, error) {
	start := time.Now()
	table := projections.NewTable()
	runner := projections.NewRunner(store, log, table)
	if snaps != nil {
		runner.ResumeAfter((&projections.Snapshotter{Store: snaps, Table: table, Logger: log}).Restore(ctx))
	}
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() { _ = runner.Run(rctx) }()
	for !runner.Ready() {
		if time.Since(start) > 10*time.Minute {
			return 0, nil, fmt.Errorf("not ready after 10 minutes")
		}
		time.Sleep(time.Millisecond)
	}
	return time.Since(start), table, nil
}

// memory measures the live heap of the in-memory projections per key,
// built from events decoded afresh as a start would, and reports the
// embedded nats-server's resident share measured while filling the stream.
func memory(_ context.Context, o Options, f *fixture) ([]Row, error) {
	n := len(f.created)
	base := heap()
	table := projections.NewTable() // the listing and the verify index
	for i, created := range f.created {
		body, err := events.Encode(created)
		if err != nil {
			return nil, err
		}
		e, err := events.Decode(body, uint64(i+1))
		if err != nil {
			return nil, err
		}
		_ = table.Apply(e)
	}
	perKey := float64(heap()-min(base, heap())) / float64(n)
	runtime.KeepAlive(table)
	server := "embedded nats-server: measured by the cold start scenario"
	if f.serverBytesPerKey > 0 {
		server = fmt.Sprintf("embedded nats-server: %.0f B/key of heap", f.serverBytesPerKey)
	}
	return []Row{{
		Scenario: fmt.Sprintf("memory, %s keys: listing + verify index", count(float64(n))),
		Figure:   fmt.Sprintf("%.0f B/key", perKey),
		Baseline: server,
		Ratio:    perKey / 300, Target: "≤ 300 B/key", Met: perKey <= 300,
	}}, nil
}
