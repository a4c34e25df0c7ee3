package events

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"
)

// Where instances share their keys' verification outcomes and recent
// callers: one batch of aggregates per instance per flush, never a message
// per verification, and no secret or hash in any of it. What a batch holds
// is the usage package's to say; this is only its transport.
const (
	OutcomeStream  = "KEYLEDGER_USAGE_OUTCOMES"
	OutcomeSubject = "keyledger.usage.outcomes"
	// UsageReportSubject is where a Go verifier sends the outcomes it
	// recorded, as a request one keyledger instance answers (a queue
	// group); the read-only account imports it as a service.
	UsageReportSubject = "keyledger.usage.report"
	// UsageReportServiceHeader names the verifier's service in a report.
	UsageReportServiceHeader = "Keyledger-Service"
	// OutcomeRollupBucket holds one object, every key's outcomes and
	// callers as the instance that wrote it had merged them from the
	// stream, and the last message it covers.
	OutcomeRollupBucket = "KEYLEDGER_USAGE_OUTCOMES_ROLLUP"
	OutcomeRollupObject = "rollup"

	// OutcomeMaxAge keeps a batch for the longest window the API answers
	// (90 days of hour buckets) and a margin: a start with no usable
	// rollup can still fold everything from the stream alone.
	OutcomeMaxAge = 92 * 24 * time.Hour
	// DefaultOutcomeMaxBytes bounds the stream; past it the oldest batches
	// go, which the rollup covers as long as it is newer than them.
	DefaultOutcomeMaxBytes = 1 << 30
	// OutcomeDuplicates is the stream's deduplication window: a batch
	// whose publication failed is sent again with the same message id, and
	// stored once if the first try did land after all.
	OutcomeDuplicates = time.Hour
	// OutcomeRollupEvery is how often some instance writes the rollup.
	OutcomeRollupEvery = 10 * time.Minute
)

// outcomeRollupCovers is the rollup's metadata key holding the last stream
// sequence it covers.
const outcomeRollupCovers = "keyledger-covers-seq"

// OutcomeStore is the outcome stream and its rollup.
type OutcomeStore struct {
	js     jetstream.JetStream
	stream jetstream.Stream
	obs    jetstream.ObjectStore
	log    *slog.Logger
	origin string // marks this store's batches, so its own watch tells them apart
}

// OpenOutcomes creates the stream (file storage, OutcomeMaxAge, maxBytes,
// DefaultOutcomeMaxBytes when zero) and the rollup bucket when they are
// missing; existing ones are used as they are, unless they have fewer
// replicas than asked.
func OpenOutcomes(ctx context.Context, js jetstream.JetStream, replicas int, maxBytes int64, log *slog.Logger) (*OutcomeStore, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	replicas = max(replicas, 1)
	if maxBytes <= 0 {
		maxBytes = DefaultOutcomeMaxBytes
	}
	stream, err := openSideStream(ctx, js, jetstream.StreamConfig{
		Name:        OutcomeStream,
		Description: "keyledger: per-minute aggregates of verification outcomes and callers per key, merged by every instance",
		Subjects:    []string{OutcomeSubject},
		Storage:     jetstream.FileStorage,
		Replicas:    replicas,
		MaxAge:      OutcomeMaxAge,
		MaxBytes:    maxBytes,
		Duplicates:  OutcomeDuplicates,
		Discard:     jetstream.DiscardOld,
	})
	if err != nil {
		return nil, err
	}
	obs, err := openObjectStore(ctx, js, jetstream.ObjectStoreConfig{
		Bucket:      OutcomeRollupBucket,
		Description: "keyledger: every key's outcomes and callers, rolled up from " + OutcomeStream,
		Storage:     jetstream.FileStorage,
		Replicas:    replicas,
	})
	if err != nil {
		return nil, err
	}
	return &OutcomeStore{js: js, stream: stream, obs: obs, log: log, origin: nuid.Next()}, nil
}

// MaxPayload is the most one published batch may hold: half the server's
// max payload, at most 256 KiB.
func (s *OutcomeStore) MaxPayload() int {
	n := 256 << 10
	if mp := int(s.js.Conn().MaxPayload()); mp > 0 {
		n = min(n, mp/2)
	}
	return n
}

// Publish stores the messages of one batch, each under its id (as
// Nats-Msg-Id: publishing the same again within OutcomeDuplicates stores
// nothing more), and returns the stream sequence of the last one once
// every one is acknowledged.
func (s *OutcomeStore) Publish(ctx context.Context, ids []string, msgs [][]byte) (uint64, error) {
	futures := make([]jetstream.PubAckFuture, len(msgs))
	for i, data := range msgs {
		f, err := s.js.PublishMsgAsync(&nats.Msg{Subject: OutcomeSubject, Data: data,
			Header: nats.Header{usageOriginHeader: []string{s.origin}, nats.MsgIdHdr: []string{ids[i]}}})
		if err != nil {
			return 0, fmt.Errorf("publish key outcomes: %w", err)
		}
		futures[i] = f
	}
	var last uint64
	for _, f := range futures {
		select {
		case ack := <-f.Ok():
			last = max(last, ack.Sequence)
		case err := <-f.Err():
			return 0, fmt.Errorf("publish key outcomes: %w", err)
		case <-ctx.Done():
			return 0, fmt.Errorf("publish key outcomes: %w", ctx.Err())
		}
	}
	return last, nil
}

// Claim stores data under the message id id unless the stream stored one
// under it within OutcomeDuplicates, and tells whether it did: the first
// of several instances to claim an id (a verifier's report, resent to
// another) is the one that counts it.
func (s *OutcomeStore) Claim(ctx context.Context, id string, data []byte) (bool, error) {
	ack, err := s.js.PublishMsg(ctx, &nats.Msg{Subject: OutcomeSubject, Data: data,
		Header: nats.Header{usageOriginHeader: []string{s.origin}, nats.MsgIdHdr: []string{id}}})
	if err != nil {
		return false, fmt.Errorf("claim %s: %w", id, err)
	}
	return !ack.Duplicate, nil
}

// OutcomeMsg is one message of the stream as Watch hands it over.
type OutcomeMsg struct {
	Seq  uint64
	Own  bool // this store published it
	Data []byte
}

// Watch calls fn with every message of the stream from sequence from on,
// then each new one, until ctx ends or fn fails.
func (s *OutcomeStore) Watch(ctx context.Context, from uint64, fn func(OutcomeMsg) error) error {
	if info, err := s.stream.Info(ctx); err == nil && from > 1 && info.State.FirstSeq > from {
		s.log.Warn("outcome batches after the outcome rollup have left the stream (--usage-outcomes-max-bytes); some counts are missing",
			"rollup_covers_seq", from-1, "stream_first_seq", info.State.FirstSeq)
	}
	return followSubject(ctx, s.stream, OutcomeSubject, from, "watch key outcomes", func(seq uint64, m jetstream.Msg) error {
		return fn(OutcomeMsg{Seq: seq, Own: m.Headers().Get(usageOriginHeader) == s.origin, Data: m.Data()})
	})
}

// RollupAge is how long ago the rollup was written; ok is false when there
// is none.
func (s *OutcomeStore) RollupAge(ctx context.Context) (age time.Duration, ok bool, err error) {
	info, err := s.obs.GetInfo(ctx, OutcomeRollupObject)
	if errors.Is(err, jetstream.ErrObjectNotFound) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, fmt.Errorf("outcome rollup: %w", err)
	}
	return time.Since(info.ModTime), true, nil
}

// PutRollup replaces the rollup with what r holds, covering the stream up
// to sequence covers; it returns the bytes written.
func (s *OutcomeStore) PutRollup(ctx context.Context, covers uint64, r io.Reader) (int, error) {
	info, err := s.obs.Put(ctx, jetstream.ObjectMeta{Name: OutcomeRollupObject,
		Metadata: map[string]string{outcomeRollupCovers: strconv.FormatUint(covers, 10)}}, r)
	if err != nil {
		return 0, fmt.Errorf("outcome rollup: %w", err)
	}
	return int(info.Size), nil
}

// ReadRollup opens the rollup and tells the last stream sequence it
// covers; a nil reader and 0 when there is none. The caller closes it.
func (s *OutcomeStore) ReadRollup(ctx context.Context) (io.ReadCloser, uint64, error) {
	r, err := s.obs.Get(ctx, OutcomeRollupObject)
	if errors.Is(err, jetstream.ErrObjectNotFound) {
		return nil, 0, nil
	}
	if err != nil {
		return nil, 0, fmt.Errorf("read the outcome rollup: %w", err)
	}
	info, err := r.Info()
	if err != nil {
		r.Close()
		return nil, 0, fmt.Errorf("read the outcome rollup: %w", err)
	}
	covers, _ := strconv.ParseUint(info.Metadata[outcomeRollupCovers], 10, 64)
	return r, covers, nil
}
