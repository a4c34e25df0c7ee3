package usage

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nuid"

	"github.com/keyledger/keyledger/events"
)

// BatchPublisher is where a flush sends its batches: the outcome stream
// (an instance), or keyledger's report subject (a Go verifier).
type BatchPublisher interface {
	MaxPayload() int
	Publish(ctx context.Context, ids []string, msgs [][]byte) (uint64, error)
}

// OutcomeSink is where instances share outcomes: events.OutcomeStore.
type OutcomeSink interface {
	BatchPublisher
	Watch(ctx context.Context, from uint64, fn func(events.OutcomeMsg) error) error
	RollupAge(ctx context.Context) (time.Duration, bool, error)
	PutRollup(ctx context.Context, covers uint64, r io.Reader) (int, error)
	ReadRollup(ctx context.Context) (io.ReadCloser, uint64, error)
}

var _ OutcomeSink = (*events.OutcomeStore)(nil)

// sharing is how the counts recorded here reach the stream exactly once,
// and how the stream's reach every instance exactly once:
//
//   - a flush moves each key's pending minutes and callers into a batch
//     and publishes it under a message id; if that fails it is sent again,
//     the same, before anything newer (the stream drops a duplicate);
//   - the watch merges every message of the stream, except this
//     instance's own, which its aggregates hold already;
//   - the rollup is the aggregates less what is pending, at the last
//     message merged, taken with no flush under way and only once the
//     watch has passed this instance's last publication: so it holds
//     exactly the messages up to the one it says it covers.
type sharing struct {
	flushMu sync.Mutex // one flush or rollup at a time
	retry   *batch     // a batch whose publication failed: sent again first
	lastOwn atomic.Uint64

	applyMu sync.Mutex // held while a message of the stream is merged
	applied atomic.Uint64
	primed  atomic.Bool

	flushes, failed, published atomic.Int64
}

type batch struct {
	ids  []string
	msgs [][]byte
	keys int
}

// The batch and rollup format: a header line, then one JSON object a line,
// each one key's. In a batch "m" are minutes counted since the last batch;
// in a rollup "m" are the minute buckets and "h" the hour buckets as they
// stand. encoding/json is enough: a batch is written once a minute.
const (
	batchHeader  = "keyledger-outcomes-v1\n"
	rollupHeader = "keyledger-outcomes-rollup-v1\n"
	maxLine      = 1 << 20
)

type wireKey struct {
	Org     string       `json:"o"`
	ID      string       `json:"k"`
	Minutes [][6]int64   `json:"m,omitempty"` // at, then the counts of each class and the replaced
	Hours   [][6]int64   `json:"h,omitempty"`
	Callers []wireCaller `json:"c,omitempty"`
}

type wireCaller struct {
	Address   string `json:"a"`
	UserAgent string `json:"u,omitempty"`
	Service   string `json:"s,omitempty"`
	First     int64  `json:"f"`
	Last      int64  `json:"l"`
	Count     uint64 `json:"n"`
	Outcome   uint8  `json:"r"`
}

func wireBuckets(l []bucket) [][6]int64 {
	if len(l) == 0 {
		return nil
	}
	out := make([][6]int64, len(l))
	for i, b := range l {
		out[i] = [6]int64{int64(b.at), int64(b.n[0]), int64(b.n[1]), int64(b.n[2]), int64(b.n[3]), int64(b.n[4])}
	}
	return out
}

func fromWire(w [6]int64) (int32, counts) {
	var n counts
	for i := range n {
		n[i] = uint32(max(0, min(w[i+1], 1<<32-1)))
	}
	return int32(w[0]), n
}

// Flush publishes what was recorded here since the last flush, in
// messages of at most the sink's MaxPayload. It reports the keys sent.
func (o *Outcomes) Flush(ctx context.Context, sink BatchPublisher) (int, error) {
	sh := &o.share
	sh.flushMu.Lock()
	defer sh.flushMu.Unlock()
	sh.flushes.Add(1)
	if b := sh.retry; b != nil {
		seq, err := sink.Publish(ctx, b.ids, b.msgs)
		if err != nil {
			sh.failed.Add(1)
			return 0, err
		}
		sh.retry = nil
		sh.lastOwn.Store(max(sh.lastOwn.Load(), seq))
	}
	b, err := o.takePending(sink.MaxPayload())
	if err != nil || b == nil {
		return 0, err
	}
	seq, err := sink.Publish(ctx, b.ids, b.msgs)
	if err != nil {
		sh.retry = b
		sh.failed.Add(1)
		return 0, err
	}
	sh.lastOwn.Store(max(sh.lastOwn.Load(), seq))
	sh.published.Add(int64(b.keys))
	return b.keys, nil
}

// takePending moves every key's pending counts and callers into a batch.
func (o *Outcomes) takePending(limit int) (*batch, error) {
	var lines []wireKey
	for i := range o.shards {
		s := &o.shards[i]
		s.mu.Lock()
		for r, a := range s.keys {
			w := wireKey{Org: r.org, ID: r.id, Minutes: wireBuckets(a.pending)}
			for j := range a.callers {
				c := &a.callers[j]
				if c.pending > 0 {
					w.Callers = append(w.Callers, wireCaller{Address: c.Address.String(), UserAgent: c.UserAgent, Service: c.Service,
						First: c.first, Last: c.last, Count: uint64(c.pending), Outcome: uint8(c.outcome)})
					c.pending = 0
				}
			}
			if a.pending = a.pending[:0]; cap(a.pending) > 4 {
				a.pending = nil // a backlog's room is not kept
			}
			if w.Minutes != nil || w.Callers != nil {
				lines = append(lines, w)
			}
		}
		s.mu.Unlock()
	}
	if len(lines) == 0 {
		return nil, nil
	}
	b := &batch{keys: len(lines)}
	id := nuid.Next()
	buf := []byte(batchHeader)
	for _, w := range lines {
		line, err := json.Marshal(w)
		if err != nil {
			return nil, fmt.Errorf("encode key outcomes: %w", err)
		}
		if len(buf) > len(batchHeader) && len(buf)+len(line)+1 > limit {
			b.msgs, b.ids = append(b.msgs, buf), append(b.ids, id+"-"+strconv.Itoa(len(b.ids)))
			buf = []byte(batchHeader)
		}
		buf = append(append(buf, line...), '\n')
	}
	b.msgs, b.ids = append(b.msgs, buf), append(b.ids, id+"-"+strconv.Itoa(len(b.ids)))
	return b, nil
}

var errOutcomeHeader = errors.New("key outcomes: not a batch or rollup of this version")

// merge folds a batch or a rollup into the aggregates; share.applyMu is
// held.
func (o *Outcomes) merge(r io.Reader) error {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), maxLine)
	if !sc.Scan() {
		return sc.Err()
	}
	var rollup bool
	switch sc.Text() + "\n" {
	case batchHeader:
	case rollupHeader:
		rollup = true
	default:
		return errOutcomeHeader
	}
	newest := int32(o.now().Unix() / 60)
	bad := 0
	for sc.Scan() {
		var w wireKey
		if err := json.Unmarshal(sc.Bytes(), &w); err != nil || w.Org == "" || w.ID == "" {
			bad++
			continue
		}
		o.mergeKey(&w, rollup, newest)
	}
	if bad > 0 {
		return fmt.Errorf("key outcomes: %d lines could not be read", bad)
	}
	return sc.Err()
}

func (o *Outcomes) mergeKey(w *wireKey, rollup bool, newest int32) {
	sh, a := o.lockDecoded(w)
	defer sh.mu.Unlock()
	for _, m := range w.Minutes {
		at, n := fromWire(m)
		if !rollup {
			a.addMinute(at, &n, newest)
		} else if at > newest-MinuteBuckets {
			addBucket(&a.minutes, at, &n, at-MinuteBuckets)
		}
	}
	for _, h := range w.Hours {
		at, n := fromWire(h)
		if rollup && at > newest/60-HourBuckets {
			addBucket(&a.hours, at, &n, at-HourBuckets)
		}
	}
	for _, c := range w.Callers {
		addr, err := netip.ParseAddr(c.Address)
		if err != nil || c.Outcome >= uint8(nClasses) {
			continue
		}
		a.called(Caller{addr, Clip(c.UserAgent, MaxUserAgent), Clip(c.Service, MaxService)}, c.First, c.Last, c.Count, Class(c.Outcome), false)
	}
}

// lockDecoded locks the shard of w's key and returns it with the key's
// aggregate, made if missing (w's strings are its own: decoded, not a
// message's bytes).
func (o *Outcomes) lockDecoded(w *wireKey) (*oshard, *keyAgg) {
	r := ref{w.Org, w.ID}
	sh := o.shard(r)
	sh.mu.Lock()
	a := sh.keys[r]
	if a == nil {
		a = &keyAgg{}
		sh.keys[r] = a
	}
	return sh, a
}

// prime reads the rollup into the aggregates, once. It is read whole
// before any of it is merged: a read failing half-way merges nothing, and
// the next try starts again.
func (o *Outcomes) prime(ctx context.Context, sink OutcomeSink, log *slog.Logger) error {
	if o.share.primed.Load() {
		return nil
	}
	rc, covers, err := sink.ReadRollup(ctx)
	if err != nil {
		return err
	}
	if rc != nil {
		data, err := io.ReadAll(rc)
		rc.Close()
		if err != nil {
			return fmt.Errorf("read the key outcomes rollup: %w", err)
		}
		o.share.applyMu.Lock()
		err = o.merge(bytes.NewReader(data))
		if errors.Is(err, errOutcomeHeader) {
			covers = 0 // not one this version reads: fold the stream instead
		}
		o.share.applied.Store(covers)
		o.share.applyMu.Unlock()
		if err != nil {
			log.Warn("part of the key outcomes rollup cannot be read", "err", err)
		}
	}
	o.share.primed.Store(true)
	return nil
}

// Follow reads the rollup the first time, then merges every message of
// the stream after the last one merged, until ctx ends or the watch fails.
func (o *Outcomes) Follow(ctx context.Context, sink OutcomeSink, log *slog.Logger) error {
	if err := o.prime(ctx, sink, log); err != nil {
		return err
	}
	return sink.Watch(ctx, o.share.applied.Load()+1, func(m events.OutcomeMsg) error {
		o.share.applyMu.Lock()
		defer o.share.applyMu.Unlock()
		if !m.Own {
			if err := o.merge(bytes.NewReader(m.Data)); err != nil {
				log.Warn("part of a key outcome batch cannot be read", "seq", m.Seq, "err", err)
			}
		}
		o.share.applied.Store(m.Seq)
		return nil
	})
}

// Applied is the last message of the stream merged here.
func (o *Outcomes) Applied() uint64 { return o.share.applied.Load() }

// Rollup writes the rollup if no instance has for most of
// events.OutcomeRollupEvery (or if force); it reports whether it did.
func (o *Outcomes) Rollup(ctx context.Context, sink OutcomeSink, force bool) (bool, error) {
	if !force {
		age, ok, err := sink.RollupAge(ctx)
		if err != nil {
			return false, err
		}
		if ok && age < events.OutcomeRollupEvery*9/10 {
			return false, nil
		}
	}
	if !o.share.primed.Load() {
		return false, errors.New("key outcomes rollup: not written before the current one has been read")
	}
	sh := &o.share
	sh.flushMu.Lock()
	defer sh.flushMu.Unlock()
	if sh.retry != nil {
		return false, nil // a batch may or may not be in the stream: next time
	}
	for sh.applied.Load() < sh.lastOwn.Load() {
		select {
		case <-ctx.Done():
			return false, fmt.Errorf("key outcomes rollup: the watch did not reach this instance's last batch: %w", ctx.Err())
		case <-time.After(10 * time.Millisecond):
		}
	}
	sh.applyMu.Lock()
	covers := sh.applied.Load()
	lines := o.published()
	sh.applyMu.Unlock()

	pr, pw := io.Pipe()
	go func() {
		bw := bufio.NewWriterSize(pw, 1<<20)
		_, err := bw.WriteString(rollupHeader)
		enc := json.NewEncoder(bw)
		for i := 0; err == nil && i < len(lines); i++ {
			err = enc.Encode(&lines[i])
		}
		if err == nil {
			err = bw.Flush()
		}
		pw.CloseWithError(err)
	}()
	_, err := sink.PutRollup(ctx, covers, pr)
	pr.CloseWithError(io.ErrClosedPipe)
	return err == nil, err
}

// published copies every key's aggregates less what is pending here:
// what the stream holds up to the last message merged. Buckets past their
// span are dropped, and keys left with nothing.
func (o *Outcomes) published() []wireKey {
	newest := int32(o.now().Unix() / 60)
	var lines []wireKey
	for i := range o.shards {
		s := &o.shards[i]
		s.mu.Lock()
		for r, a := range s.keys {
			a.minutes = trimBefore(a.minutes, newest-MinuteBuckets)
			a.hours = trimBefore(a.hours, newest/60-HourBuckets)
			a.callers = trimCallers(a.callers, int64(newest-HourBuckets*60)*60)
			if len(a.minutes) == 0 && len(a.hours) == 0 && len(a.callers) == 0 && len(a.pending) == 0 {
				delete(s.keys, r)
				continue
			}
			minutes, hours := slicesClone(a.minutes), slicesClone(a.hours)
			for _, p := range a.pending {
				sub(minutes, p.at, &p.n)
				sub(hours, p.at/60, &p.n)
			}
			w := wireKey{Org: r.org, ID: r.id, Minutes: wireBuckets(minutes), Hours: wireBuckets(hours)}
			for _, c := range a.callers {
				if n := c.count - uint64(c.pending); n > 0 {
					w.Callers = append(w.Callers, wireCaller{Address: c.Address.String(), UserAgent: c.UserAgent, Service: c.Service,
						First: c.first, Last: c.last, Count: n, Outcome: uint8(c.outcome)})
				}
			}
			lines = append(lines, w)
		}
		s.mu.Unlock()
	}
	return lines
}

func slicesClone(l []bucket) []bucket { return append([]bucket(nil), l...) }

func sub(l []bucket, at int32, n *counts) {
	for i := range l {
		if l[i].at == at {
			l[i].n.add(n, -1)
			return
		}
	}
}

// trimBefore drops the buckets at or before cut.
func trimBefore(l []bucket, cut int32) []bucket {
	i := 0
	for i < len(l) && l[i].at <= cut {
		i++
	}
	if i == 0 {
		return l
	}
	return l[:copy(l, l[i:])]
}

// trimCallers drops the callers last seen before cut (Unix seconds).
func trimCallers(l []callerStat, cut int64) []callerStat {
	out := l[:0]
	for _, c := range l {
		if c.last >= cut || c.pending > 0 {
			out = append(out, c)
		}
	}
	return out
}

// OutcomeStats are the flushes so far, for /metrics and logs.
type OutcomeStats struct {
	Flushes, Failed, Keys int64
}

// Stats reads them.
func (o *Outcomes) Stats() OutcomeStats {
	return OutcomeStats{Flushes: o.share.flushes.Load(), Failed: o.share.failed.Load(), Keys: o.share.published.Load()}
}

// Run follows the stream, flushes every interval and writes the rollup
// every events.OutcomeRollupEvery (whichever instance finds it oldest),
// until ctx ends; then it flushes once more and writes the rollup.
func (o *Outcomes) Run(ctx context.Context, sink OutcomeSink, every time.Duration, log *slog.Logger) {
	// The watch outlives ctx by the final flush: the rollup after it waits
	// for the watch to pass this instance's last batch.
	wctx, stopWatch := context.WithCancel(context.WithoutCancel(ctx))
	defer stopWatch()
	go func() {
		for wctx.Err() == nil {
			if err := o.Follow(wctx, sink, log); err != nil && wctx.Err() == nil {
				log.Warn("watching key outcomes; retrying", "err", err)
				select {
				case <-wctx.Done():
				case <-time.After(5 * time.Second):
				}
			}
		}
	}()
	tick := time.NewTicker(every)
	defer tick.Stop()
	roll := time.NewTicker(events.OutcomeRollupEvery)
	defer roll.Stop()
	for {
		select {
		case <-tick.C:
			fctx, cancel := context.WithTimeout(ctx, every)
			if _, err := o.Flush(fctx, sink); err != nil {
				log.Warn("flushing key outcomes; will retry", "err", err)
			}
			cancel()
		case <-roll.C:
			rctx, cancel := context.WithTimeout(ctx, time.Minute)
			if _, err := o.Rollup(rctx, sink, false); err != nil {
				log.Warn("writing the key outcomes rollup; will retry", "err", err)
			}
			cancel()
		case <-ctx.Done():
			fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			if _, err := o.Flush(fctx, sink); err != nil {
				log.Warn("final flush of key outcomes failed", "err", err)
			} else if _, err := o.Rollup(fctx, sink, true); err != nil {
				log.Warn("final key outcomes rollup failed", "err", err)
			}
			cancel()
			return
		}
	}
}
