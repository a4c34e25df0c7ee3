package bench

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"runtime"
	"time"

	"github.com/keyledger/keyledger/events"
	khttp "github.com/keyledger/keyledger/http"
	"github.com/keyledger/keyledger/projections"
	"github.com/keyledger/keyledger/usage"
)

// outcomesOverHTTP is POST /v1/verify as serve runs it, 32 connections,
// with the per-key outcome and caller recording against the same server
// with it off (SkipOutcomes), in alternating rounds of the same run. Both
// record last uses, as serve does; only the outcome recording differs.
func outcomesOverHTTP(ctx context.Context, o Options, f *fixture) ([]Row, error) {
	const c = 32
	idx := f.index()
	log := slog.New(slog.NewJSONHandler(io.Discard, nil))
	runner, stop, err := builtRunner(ctx, log)
	if err != nil {
		return nil, err
	}
	defer stop()
	server := func(skip bool) *khttp.Server {
		return &khttp.Server{Index: idx, Listing: projections.NewListing(), Runner: runner, Logger: log, SkipOutcomes: skip,
			VerifyLimit: khttp.Limit{Per: benchVerifyRate, Every: time.Second}, RateLimitClients: khttp.DefaultRateLimitClients}
	}
	on := server(false)
	onURL, stopOn, err := serve(on.Handler())
	if err != nil {
		return nil, err
	}
	defer stopOn()
	offURL, stopOff, err := serve(server(true).Handler())
	if err != nil {
		return nil, err
	}
	defer stopOff()
	run := func(url string) loadResult {
		client := httpClient(c)
		defer client.CloseIdleConnections()
		return load(c, o.window(), func(w, i int) error {
			return postVerify(client, url, f.secrets[(w*7919+i)%len(f.secrets)])
		})
	}
	got, base := alternate(o.rounds(), func() loadResult { return run(onURL) }, func() loadResult { return run(offURL) })
	if got.errors > 0 || base.errors > 0 {
		return nil, fmt.Errorf("%d verifications with outcomes and %d without failed", got.errors, base.errors)
	}
	if on.Outcomes.Known() == 0 {
		return nil, fmt.Errorf("the server with outcomes on counted no key")
	}
	tput := got.perSecond() / base.perSecond()
	return []Row{{
		Scenario: "verify over HTTP, 32 connections: throughput with per-key outcomes and callers recorded (2xx only)",
		Figure:   count(got.perSecond()) + "/s", Baseline: "outcomes off: " + count(base.perSecond()) + "/s",
		Ratio: tput, Target: "≥ 0.95 × off", Met: tput >= 0.95,
	}}, nil
}

// discardOutcomes takes batches and rollups and keeps nothing.
type discardOutcomes struct{}

func (discardOutcomes) MaxPayload() int { return 256 << 10 }
func (discardOutcomes) Publish(context.Context, []string, [][]byte) (uint64, error) {
	return 0, nil
}
func (discardOutcomes) Watch(ctx context.Context, _ uint64, _ func(events.OutcomeMsg) error) error {
	<-ctx.Done()
	return ctx.Err()
}
func (discardOutcomes) RollupAge(context.Context) (time.Duration, bool, error) { return 0, false, nil }
func (discardOutcomes) PutRollup(_ context.Context, _ uint64, r io.Reader) (int, error) {
	n, err := io.Copy(io.Discard, r)
	return int(n), err
}
func (discardOutcomes) ReadRollup(context.Context) (io.ReadCloser, uint64, error) {
	return nil, 0, nil
}

// outcomesMemory measures the heap the outcome aggregates take: o.Keys
// keys (ids as long as real ones) each verified once by one caller (one
// minute bucket, one hour bucket, one caller), before and after the flush
// that publishes it; and 1,000 keys at their bound (every minute of a day,
// every hour of 90 days, 20 callers with 256-byte User-Agents).
func outcomesMemory(ctx context.Context, o Options, _ *fixture) ([]Row, error) {
	now := time.Now()
	caller := usage.Caller{Address: netip.MustParseAddr("192.0.2.1"), UserAgent: "billing-worker/2.1 (linux; go1.25)"}
	ids := make([]string, o.Keys)
	for i := range ids {
		ids[i] = fmt.Sprintf("key_01J%023d", i)
	}
	base := heap()
	out := usage.NewOutcomes()
	for _, id := range ids {
		out.Record("acme", id, usage.Outcome{Class: usage.Valid}, caller, now)
	}
	recorded := heap()
	if _, err := out.Flush(ctx, discardOutcomes{}); err != nil {
		return nil, err
	}
	flushed := heap()
	runtime.KeepAlive(out)
	perKey := func(hi, lo uint64, n int) float64 { return float64(hi-min(lo, hi)) / float64(n) }
	typical, typicalFlushed := perKey(recorded, base, len(ids)), perKey(flushed, base, len(ids))

	const busy = 1000
	out = nil
	base = heap()
	full := usage.NewOutcomes()
	full.Now = func() time.Time { return now }
	agents := make([]usage.Caller, usage.MaxCallers)
	for i := range agents {
		agents[i] = usage.Caller{Address: netip.AddrFrom4([4]byte{198, 51, 100, byte(i)}), UserAgent: fmt.Sprintf("%0256d", i)}
	}
	for k := range busy {
		id := fmt.Sprintf("key_01J%023d", k)
		for m := usage.HourBuckets*60 - 1; m >= 0; m-- { // oldest first, as they come
			at := now.Add(-time.Duration(m) * time.Minute)
			if m >= usage.MinuteBuckets && m%60 != 0 {
				continue // older than a day: one a hour fills the hour buckets
			}
			full.Record("acme", id, usage.Outcome{Class: usage.Class(m % 4)}, agents[m%len(agents)], at)
		}
	}
	if _, err := full.Flush(ctx, discardOutcomes{}); err != nil {
		return nil, err
	}
	busyKey := perKey(heap(), base, busy)
	runtime.KeepAlive(full)
	const typicalTarget, busyTarget = 1024, 256 << 10
	return []Row{
		{Scenario: fmt.Sprintf("memory, %s keys each verified once: per-key outcome aggregates (1 minute, 1 hour, 1 caller)", count(float64(len(ids)))),
			Figure:   fmt.Sprintf("%.0f B/key (%.0f after its flush)", typical, typicalFlushed),
			Baseline: "(a key with no counts takes none)", Ratio: typical / typicalTarget, Target: "≤ 1 KiB/key", Met: typical <= typicalTarget},
		{Scenario: fmt.Sprintf("memory, %d keys at the bound: %d minute + %d hour buckets, %d callers with 256-byte User-Agents", busy, usage.MinuteBuckets, usage.HourBuckets, usage.MaxCallers),
			Figure:   fmt.Sprintf("%.0f B/key", busyKey),
			Baseline: fmt.Sprintf("(buckets alone: %d B)", (usage.MinuteBuckets+usage.HourBuckets)*24),
			Ratio:    busyKey / busyTarget, Target: "≤ 256 KiB/key", Met: busyKey <= busyTarget},
	}, nil
}
