package bench

import (
	"bytes"
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/keyledger/keyledger/domain"
	khttp "github.com/keyledger/keyledger/http"
	"github.com/keyledger/keyledger/projections"
	"github.com/keyledger/keyledger/usage"
)

// measure times f over growing counts until a run lasts at least min, and
// returns the time per call.
func measure(min time.Duration, f func(i int)) time.Duration {
	for n := 1000; ; n *= 4 {
		start := time.Now()
		for i := range n {
			f(i)
		}
		if el := time.Since(start); el >= min || n > 1<<30 {
			return el / time.Duration(n)
		}
	}
}

func (o Options) window() time.Duration {
	if o.Quick {
		return 200 * time.Millisecond
	}
	return 3 * time.Second
}

func (f *fixture) index() *projections.VerifyIndex {
	idx := projections.NewVerifyIndex()
	for _, e := range f.events() {
		_ = idx.Apply(e)
	}
	return idx
}

func verifyInProcess(_ context.Context, o Options, f *fixture) ([]Row, error) {
	idx := f.index()
	now := time.Now()
	n := len(f.secrets)
	got := measure(o.window(), func(i int) { idx.Verify(f.secrets[i%n], now) })
	bare := make(map[[sha256.Size]byte]int, n)
	for i, s := range f.secrets {
		bare[sha256.Sum256([]byte(s))] = i
	}
	base := measure(o.window(), func(i int) { _ = bare[sha256.Sum256([]byte(f.secrets[i%n]))] })
	ratio := float64(got) / float64(base)
	// What the verifier package's VerifyFrom does with Options.Service:
	// the same lookup, and the verification counted against its key by
	// outcome and caller (usage.Outcomes.RecordVerdict), each key counted
	// once before the clock starts, as a service's keys are in use.
	outcomes := usage.NewOutcomes()
	caller := usage.Caller{Address: netip.MustParseAddr("203.0.113.7"), UserAgent: "bench/1.0", Service: "bench"}
	counted := func(i int) {
		res := idx.Verify(f.secrets[i%n], now)
		outcomes.RecordVerdict(res.Verdict, res.Key, caller, now)
	}
	for i := range n {
		counted(i)
	}
	withUsage := measure(o.window(), counted)
	uratio := float64(withUsage) / float64(base)
	return []Row{{
		Scenario: "verify in-process, " + count(float64(n)) + " keys", Figure: dur(got) + "/op", Baseline: "SHA-256 + Go map: " + dur(base) + "/op",
		Ratio: ratio, Target: "≤ 1.3 × bare", Met: ratio <= 1.3,
	}, {
		Scenario: "verify in-process with usage counted (the verifier's VerifyFrom with Options.Service: lookup + outcome and caller recorded), " + count(float64(n)) + " keys",
		Figure:   dur(withUsage) + "/op", Baseline: "SHA-256 + Go map: " + dur(base) + "/op",
		Ratio: uratio, Target: "≤ 1.3 × bare", Met: uratio <= 1.3,
	}}, nil
}

// serve runs h on a loopback port until the returned stop.
func serve(h http.Handler) (url string, stop func(), err error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, err
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	return "http://" + ln.Addr().String(), func() { _ = srv.Close() }, nil
}

// loadResult is what a closed-loop load at a fixed concurrency achieved.
type loadResult struct {
	ops      int
	elapsed  time.Duration
	p50, p99 time.Duration
	errors   int
}

func (r loadResult) perSecond() float64 { return rate(r.ops, r.elapsed) }

// load runs op from c goroutines for d and collects its latencies.
func load(c int, d time.Duration, op func(worker, i int) error) loadResult {
	var mu sync.Mutex
	var all []time.Duration
	errs := 0
	deadline := time.Now().Add(d)
	start := time.Now()
	var wg sync.WaitGroup
	for w := range c {
		wg.Go(func() {
			var mine []time.Duration
			bad := 0
			for i := 0; time.Now().Before(deadline); i++ {
				t0 := time.Now()
				if err := op(w, i); err != nil {
					bad++
					continue
				}
				mine = append(mine, time.Since(t0))
			}
			mu.Lock()
			all = append(all, mine...)
			errs += bad
			mu.Unlock()
		})
	}
	wg.Wait()
	return loadResult{ops: len(all), elapsed: time.Since(start), p50: percentile(all, 50), p99: percentile(all, 99), errors: errs}
}

func httpClient(c int) *http.Client {
	return &http.Client{Transport: &http.Transport{MaxIdleConns: c, MaxIdleConnsPerHost: c, DisableCompression: true}}
}

// postVerify sends one verification and reads the answer; anything but a
// 2xx is an error, and counted as one, not as a verification.
func postVerify(client *http.Client, url, key string) error {
	res, err := client.Post(url+"/v1/verify", "application/json", bytes.NewReader([]byte(`{"key":"`+key+`"}`)))
	if err != nil {
		return err
	}
	_, _ = io.Copy(io.Discard, res.Body)
	res.Body.Close()
	if res.StatusCode < 200 || res.StatusCode > 299 {
		return errStatus(res.StatusCode)
	}
	return nil
}

type errStatus int

func (e errStatus) Error() string { return "status " + http.StatusText(int(e)) }

// bareVerify is the least an HTTP verify can do: decode, hash, look up,
// encode.
func bareVerify(m map[[sha256.Size]byte]int) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			Key string `json:"key"`
		}
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
			http.Error(w, "bad", http.StatusBadRequest)
			return
		}
		_, ok := m[sha256.Sum256([]byte(req.Key))]
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{"valid": ok})
	})
}

// builtSource is the stream of an index built beforehand: nothing to
// replay, nothing new; a runner on it is ready at once, as serve's is once
// it has caught up.
type builtSource struct{}

func (builtSource) Follow(ctx context.Context, _ uint64, _ func(domain.Event) error) error {
	<-ctx.Done()
	return ctx.Err()
}

func (builtSource) LastSeq(context.Context) (uint64, error) { return 0, nil }

// benchVerifyRate is the bench's --verify-rate-limit: the load comes from
// one address, 127.0.0.1, so one bucket takes all of it, and at some
// 30,000–40,000 verifications a second on this machine a limit of a
// million a second (in bursts of as many) never refuses one. serve's
// default, 10,000, would refuse most of them: that is the limit doing its
// work, not a verification measured.
const benchVerifyRate = 1000000

func verifyOverHTTP(ctx context.Context, o Options, f *fixture) ([]Row, error) {
	const c = 32
	idx := f.index()
	// The access log as serve writes it (JSON, info), into the void.
	log := slog.New(slog.NewJSONHandler(io.Discard, nil))
	runner, stop, err := builtRunner(ctx, log)
	if err != nil {
		return nil, err
	}
	defer stop()
	// The verify rate limit is built as serve builds it from
	// --verify-rate-limit and --rate-limit-clients (its default), so every
	// verification takes a token from its address's bucket.
	api := &khttp.Server{Index: idx, Listing: projections.NewListing(), Runner: runner, Logger: log,
		VerifyLimit: khttp.Limit{Per: benchVerifyRate, Every: time.Second}, RateLimitClients: khttp.DefaultRateLimitClients}
	url, stop, err := serve(api.Handler())
	if err != nil {
		return nil, err
	}
	defer stop()
	bare := make(map[[sha256.Size]byte]int, len(f.secrets))
	for i, s := range f.secrets {
		bare[sha256.Sum256([]byte(s))] = i
	}
	burl, bstop, err := serve(bareVerify(bare))
	if err != nil {
		return nil, err
	}
	defer bstop()
	var refused sync.Map // status → count, of both sides
	run := func(url string) loadResult {
		client := httpClient(c)
		defer client.CloseIdleConnections()
		return load(c, o.window(), func(w, i int) error {
			err := postVerify(client, url, f.secrets[(w*7919+i)%len(f.secrets)])
			if s, ok := err.(errStatus); ok {
				n, _ := refused.LoadOrStore(int(s), new(atomic.Int64))
				n.(*atomic.Int64).Add(1)
			}
			return err
		})
	}
	got, base := alternate(o.rounds(), func() loadResult { return run(url) }, func() loadResult { return run(burl) })
	// Only 2xx answers are verifications: any other fails the scenario,
	// since the limit is set never to refuse (a 429 would mean it did).
	if got.errors > 0 || base.errors > 0 {
		var statuses []string
		refused.Range(func(k, v any) bool {
			statuses = append(statuses, fmt.Sprintf("%d × %d", v.(*atomic.Int64).Load(), k))
			return true
		})
		return nil, fmt.Errorf("%d verifications and %d bare requests failed (answers: %s; the rest no answer)", got.errors, base.errors, strings.Join(statuses, ", "))
	}
	tput := got.perSecond() / base.perSecond()
	p99 := float64(got.p99) / float64(base.p99)
	return []Row{
		{Scenario: "verify over HTTP, 32 connections, verify rate limit in: throughput (2xx only)", Figure: count(got.perSecond()) + "/s",
			Baseline: "bare net/http: " + count(base.perSecond()) + "/s", Ratio: tput, Target: "≥ 0.95 × bare", Met: tput >= 0.95},
		{Scenario: "verify over HTTP, 32 connections, verify rate limit in: p50 / p99", Figure: dur(got.p50) + " / " + dur(got.p99),
			Baseline: "bare: " + dur(base.p50) + " / " + dur(base.p99), Ratio: p99, Target: "p99 ≤ 1.2 × bare", Met: p99 <= 1.2},
	}, nil
}

// rounds is how many times each side of an HTTP comparison runs,
// alternating, so that a pause of the shared machine (or a garbage
// collection over the bench's own fixture) lands on both sides alike.
func (o Options) rounds() int {
	if o.Quick {
		return 1
	}
	return 3
}

// alternate runs ours and the baseline in turns and returns, for each, the
// median of its rounds: ops, p50 and p99 each the median of their own.
func alternate(rounds int, ours, base func() loadResult) (loadResult, loadResult) {
	var a, b []loadResult
	for range rounds {
		b = append(b, base())
		a = append(a, ours())
	}
	return median(a), median(b)
}

func median(rs []loadResult) loadResult {
	pick := func(key func(loadResult) float64) loadResult {
		s := slices.Clone(rs)
		slices.SortFunc(s, func(x, y loadResult) int { return cmp.Compare(key(x), key(y)) })
		return s[len(s)/2]
	}
	out := pick(loadResult.perSecond)
	out.p50 = pick(func(r loadResult) float64 { return float64(r.p50) }).p50
	out.p99 = pick(func(r loadResult) float64 { return float64(r.p99) }).p99
	for _, r := range rs {
		out.errors += r.errors
	}
	return out
}

// builtRunner is a projection runner over a fixture already built into
// its projections (builtSource), ready; stop ends it.
func builtRunner(ctx context.Context, log *slog.Logger) (*projections.Runner, context.CancelFunc, error) {
	runner := projections.NewRunner(builtSource{}, log)
	rctx, cancel := context.WithCancel(ctx)
	go func() { _ = runner.Run(rctx) }()
	if err := runner.WaitReady(ctx); err != nil {
		cancel()
		return nil, nil, err
	}
	return runner, cancel, nil
}
