package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"runtime"
	"sync"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/keyledger/keyledger/domain"
	"github.com/keyledger/keyledger/events"
	"github.com/keyledger/keyledger/events/natsembed"
	"github.com/keyledger/keyledger/projections"
	kusage "github.com/keyledger/keyledger/usage"
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

// coldStart fills a stream with the fixture's keys, signed as an instance
// signs them and covered by checkpoints as serve writes them, and times the
// ways to a ready instance: from a snapshot, by full replay, and a raw
// ordered consumer draining the same stream. It also measures the memory
// the projections and the embedded nats-server hold per key.
func coldStart(ctx context.Context, o Options, f *fixture) ([]Row, error) {
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	n := len(f.created)
	before := heap()
	ss, err := newSignedStream(ctx, filepath.Join(o.Dir, "cold"), "", f.created)
	if err != nil {
		return nil, err
	}
	defer ss.emb.Close()
	js, writer := ss.js, ss.writer
	// The server runs in this process: what the heap kept after filling the
	// stream (the client's garbage collected) is the server's.
	serverShare := float64(heap()-min(before, heap())) / float64(n)
	// A fresh instance of the deployment replays it: it trusts the key.
	store, err := events.Attach(ctx, js, events.Config{Logger: quiet, Signer: newSigner(), Signers: writer.Signers()})
	if err != nil {
		return nil, err
	}
	total, err := store.LastSeq(ctx)
	if err != nil {
		return nil, err
	}

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
	for range total {
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
	// The replayed table goes before the snapshot's is built: one
	// instance holds one (at ten million keys, two would not fit beside
	// the fixture and the server).
	table = nil
	runtime.GC()
	fromSnapshot, _, err := readyIn(ctx, store, quiet, snaps)
	if err != nil {
		return nil, err
	}
	replayRatio := rate(n, replay) / rate(n, drain)
	rows := []Row{
		{Scenario: fmt.Sprintf("cold start, %s keys: ready from a snapshot", count(float64(n))), Figure: dur(fromSnapshot),
			Baseline: "raw drain: " + dur(drain), Ratio: float64(fromSnapshot) / float64(drain), Target: perMillion(time.Second, n), Met: fromSnapshot <= scaled(time.Second, n)},
		{Scenario: fmt.Sprintf("cold start, %s keys: full replay", count(float64(n))),
			Figure:   fmt.Sprintf("%s (%s events/s, %.1f cores busy)", dur(replay), count(rate(n, replay)), replayCPU.Seconds()/replay.Seconds()),
			Baseline: fmt.Sprintf("raw drain: %s events/s (%.1f cores busy)", count(rate(n, drain)), drainCPU.Seconds()/drain.Seconds()),
			Ratio:    replayRatio, Target: "≥ 0.9 × drain rate", Met: replayRatio >= 0.9},
	}
	rows = append(rows, Row{Scenario: fmt.Sprintf("cold start, %s keys: the embedded nats-server's heap holding the stream (%s subjects)", count(float64(n)), count(float64(n))),
		Figure: fmt.Sprintf("%.0f B/key", serverShare), Baseline: "(the memory row has keyledger's)", Ratio: 1, Target: "(for comparison)", Met: true})
	f.serverBytesPerKey = serverShare
	return rows, nil
}

// scaled is a time target set for a million keys, for n: it grows with
// the keys, as a start's work does (every key is decoded and indexed).
func scaled(perM time.Duration, n int) time.Duration {
	return time.Duration(float64(perM) * max(1, float64(n)/1e6))
}

// perMillion names the target scaled gives.
func perMillion(perM time.Duration, n int) string {
	if n <= 1000000 {
		return "≤ " + dur(perM)
	}
	return fmt.Sprintf("≤ %s (%s a million keys)", dur(scaled(perM, n)), dur(perM))
}

// signedStream is the stream the cold start and the verifier start read:
// an embedded server in its own directory holding the fixture's
// creations, each signed as an instance signs what it appends, and
// covered by checkpoints as serve writes them.
type signedStream struct {
	emb    *natsembed.Server
	js     jetstream.JetStream // keyledger's own connection: the service credential
	signer *events.Signer
	writer *events.Store
	cp     *events.Checkpointer
}

// newSignedStream starts the server in dir (with a client port on listen
// when not empty), fills it with evs and checkpoints them.
func newSignedStream(ctx context.Context, dir, listen string, evs []domain.Event) (*signedStream, error) {
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	emb, err := natsembed.Start(natsembed.Config{Dir: dir, Listen: listen, Logger: quiet})
	if err != nil {
		return nil, err
	}
	s := &signedStream{emb: emb, signer: newSigner()}
	s.js, _ = jetstream.New(emb.Conn)
	if s.writer, err = events.Open(ctx, s.js, events.Config{Logger: quiet, Signer: s.signer}); err == nil {
		err = s.fill(ctx, evs)
	}
	if err != nil {
		emb.Close()
		return nil, err
	}
	return s, nil
}

// fill appends evs, signed, and the checkpoints serve writes over them
// (every minute, and at a clean stop). The fixture signed every event:
// its verdicts say so.
func (s *signedStream) fill(ctx context.Context, evs []domain.Event) error {
	if err := fillSigned(ctx, s.js, evs, s.signer); err != nil {
		return err
	}
	s.writer.UseVerdicts(allSigned{})
	if s.cp == nil {
		s.cp = &events.Checkpointer{Store: s.writer, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
	}
	for more := true; more; {
		var err error
		if _, more, err = s.cp.Once(ctx); err != nil {
			return err
		}
	}
	return nil
}

// allSigned is the fixture's verdicts: it signed every event it wrote.
type allSigned struct{}

func (allSigned) Judged(uint64) (trusted, known bool) { return true, true }

// fillSigned publishes the events, each signed by signer as an instance
// signs what it appends, signing on every core, publishing in batches.
func fillSigned(ctx context.Context, js jetstream.JetStream, evs []domain.Event, signer *events.Signer) error {
	const batch = 10000
	msgs := make([]*nats.Msg, batch)
	for start := 0; start < len(evs); start += batch {
		part := evs[start:min(start+batch, len(evs))]
		var wg sync.WaitGroup
		workers := runtime.GOMAXPROCS(0)
		for w := range workers {
			wg.Go(func() {
				for i := w; i < len(part); i += workers {
					e := part[i]
					body, _ := events.Encode(e)
					m := &nats.Msg{Subject: events.Subject(e.OrgID, e.KeyID, e.Type), Data: body}
					signer.SignEvent(m)
					msgs[i] = m
				}
			})
		}
		wg.Wait()
		for _, m := range msgs[:len(part)] {
			_, err := js.PublishMsgAsync(m)
			for errors.Is(err, jetstream.ErrTooManyStalledMsgs) {
				// The server is behind (a stream of ten million keys
				// syncing every write): let it catch up, then go on.
				if err := publishedAll(ctx, js, len(evs)); err != nil {
					return err
				}
				_, err = js.PublishMsgAsync(m)
			}
			if err != nil {
				return err
			}
		}
		if err := publishedAll(ctx, js, len(evs)); err != nil {
			return err
		}
	}
	return nil
}

// publishedAll waits until every async publish of js was acknowledged.
func publishedAll(ctx context.Context, js jetstream.JetStream, n int) error {
	select {
	case <-js.PublishAsyncComplete():
		return nil
	case <-time.After(2 * time.Minute):
		return fmt.Errorf("publishing %d events took too long", n)
	case <-ctx.Done():
		return ctx.Err()
	}
}

// readyIn starts projections on store, from a snapshot when snaps is not
// nil, and returns how long until they were ready.
func readyIn(ctx context.Context, store *events.Store, log *slog.Logger, snaps *events.Snapshots) (time.Duration, *projections.Table, error) {
	start := time.Now()
	table := projections.NewTable()
	runner := projections.NewRunner(store, log, table)
	if snaps != nil {
		from, err := (&projections.Snapshotter{Store: snaps, Table: table, Logger: log}).Restore(ctx)
		if err != nil {
			return 0, nil, err
		}
		runner.ResumeAfter(from)
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
// built from events decoded afresh as a start would, and of the record of
// each key's last use (projections.Usage), with every key used once, as
// serve records it on a verification: the peak, before the minute's flush
// empties its set of uses not shared yet. Beside it, the embedded
// nats-server's heap per key measured while filling the stream.
func memory(ctx context.Context, o Options, f *fixture) ([]Row, error) {
	n, total := len(f.created), len(f.created)+len(f.rotated)
	// No slice of all the events is made here: it would be garbage
	// collected while the table is built, and leave the table looking
	// smaller by its size.
	base := heap()
	table := projections.NewTable() // the listing and the verify index
	for i := range total {
		ev := f.created[min(i, n-1)]
		if i >= n {
			ev = f.rotated[i-n]
		}
		body, err := events.Encode(ev)
		if err != nil {
			return nil, err
		}
		e, err := events.Decode(body, uint64(i+1))
		if err != nil {
			return nil, err
		}
		_ = table.Apply(e)
	}
	afterTable := heap()
	usage := kusage.New()
	index, now := table.Index(), time.Now()
	for _, s := range f.secrets {
		res := index.Verify(s, now)
		if !res.Valid() {
			return nil, fmt.Errorf("a fixture key verifies %s", res.Code)
		}
		usage.Touch(res.Key.OrgID, res.Key.ID, now)
	}
	afterUsage := heap()
	if _, err := usage.Flush(ctx, discardUses{}); err != nil {
		return nil, err
	}
	afterFlush := heap()
	perKey := func(hi, lo uint64) float64 { return float64(hi-min(lo, hi)) / float64(n) }
	tableKey, usageKey, flushedKey := perKey(afterTable, base), perKey(afterUsage, afterTable), perKey(afterFlush, afterTable)
	perKeyAll := tableKey + usageKey
	runtime.KeepAlive(table)
	runtime.KeepAlive(usage)
	server := "embedded nats-server: measured by the cold start scenario"
	if f.serverBytesPerKey > 0 {
		server = fmt.Sprintf("embedded nats-server: %.0f B/key of heap", f.serverBytesPerKey)
	}
	return []Row{{
		Scenario: fmt.Sprintf("memory, %s keys (%s events: 1 in %d rotated, varied scopes and actors): listing + verify index + usage", count(float64(n)), count(float64(total)), rotatedShare),
		Figure:   fmt.Sprintf("%.0f B/key (table %.0f, usage %.0f before its flush, %.0f after)", perKeyAll, tableKey, usageKey, flushedKey),
		Baseline: server,
		Ratio:    perKeyAll / 300, Target: "≤ 300 B/key", Met: perKeyAll <= 300,
	}}, nil
}

// discardUses is a usage sink that keeps nothing: the flush empties the
// set of uses not shared yet, as serve's does every minute.
type discardUses struct{}

func (discardUses) Flush(context.Context, []events.KeyUse) (events.FlushStats, error) {
	return events.FlushStats{}, nil
}

func (discardUses) Watch(ctx context.Context, _ func(org, id string, at time.Time)) error {
	<-ctx.Done()
	return ctx.Err()
}
