package events

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"
)

// Where instances share when keys were last used. None of it is the audit
// stream: uses are not events.
const (
	// UsageStream holds batches of uses, each message the uses of many
	// keys from one flush, kept for UsageLogMaxAge.
	UsageStream  = "KEYLEDGER_USAGE_LOG"
	UsageSubject = "keyledger.usage.uses"
	// UsageRollupBucket holds one object: every key's latest use known to
	// the instance that wrote it, and the last message of UsageStream it
	// had merged. A start reads it, then the stream after that message.
	UsageRollupBucket = "KEYLEDGER_USAGE_ROLLUP"
	// UsageBucket is the key-value bucket of earlier versions, one entry
	// per key. It is no longer written; while it exists it is watched, so
	// that a rolling upgrade loses no use, and given UsageLegacyMaxAge.
	UsageBucket = "KEYLEDGER_USAGE"

	// UsageLogMaxAge is how long a batch stays in UsageStream: several
	// times UsageRollupEvery, so that a rollup always finds the batches
	// after it.
	UsageLogMaxAge = time.Hour
	// UsageRollupEvery is how often some instance writes the rollup.
	UsageRollupEvery = 10 * time.Minute
	// UsageRetention is how long a key's last use is kept after it: a key
	// unused for longer leaves the rollup, and shows no last_used_at.
	UsageRetention = 400 * 24 * time.Hour
	// UsageLegacyMaxAge is given, in place, to a UsageBucket that has no
	// max age: an entry no old instance refreshes leaves it after a day.
	UsageLegacyMaxAge = 24 * time.Hour
)

// UsageRollupObject is the rollup's name in UsageRollupBucket.
const UsageRollupObject = "rollup"

// usageOriginHeader names the store that published a batch.
const usageOriginHeader = "Keyledger-Usage-Origin"

// usageRollupCovers is the rollup's metadata key holding the last stream
// sequence it covers.
const usageRollupCovers = "keyledger-covers-seq"

// KeyUse is the latest use of one key, to the minute.
type KeyUse struct {
	Org, ID string
	At      time.Time
}

// UsageStore is the stream, the rollup and, while it exists, the legacy
// bucket.
type UsageStore struct {
	js     jetstream.JetStream
	stream jetstream.Stream
	obs    jetstream.ObjectStore
	legacy jetstream.KeyValue // nil when there is none
	log    *slog.Logger

	// BatchBytes bounds one message (default: 256 KiB, or half the
	// server's max payload if that is less); Window bounds the messages
	// published and not yet acknowledged (default 16).
	BatchBytes int
	Window     int

	origin   string // marks this store's batches, which its own watch skips
	primed   sync.Once
	hasMerge atomic.Bool   // the rollup was read: a rollup written here holds it
	applied  atomic.Uint64 // the last message of the stream merged here
}

// FlushStats is what one flush sent.
type FlushStats struct {
	Uses, Messages, Bytes int
}

// openSideStream opens the stream cfg names, creating it as cfg says when
// it is missing (another instance creating it at the same time is fine);
// an existing one is used as it is, unless it has fewer replicas than cfg.
func openSideStream(ctx context.Context, js jetstream.JetStream, cfg jetstream.StreamConfig) (jetstream.Stream, error) {
	stream, err := js.Stream(ctx, cfg.Name)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		stream, err = js.CreateStream(ctx, cfg)
		if errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
			stream, err = js.Stream(ctx, cfg.Name)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("stream %s: %w", cfg.Name, err)
	}
	if have := stream.CachedInfo().Config.Replicas; have < cfg.Replicas {
		return nil, unfit("stream %s has %d replicas, fewer than the %d asked with --stream-replicas (raise them with `nats stream edit %s --replicas %d`); keyledger never changes its replicas",
			cfg.Name, have, cfg.Replicas, cfg.Name, cfg.Replicas)
	}
	return stream, nil
}

// OpenUsage creates the stream and the rollup bucket when they are missing
// (existing ones are used as they are, unless they have fewer replicas than
// asked), and finds the legacy bucket, giving it UsageLegacyMaxAge if it
// has no max age.
func OpenUsage(ctx context.Context, js jetstream.JetStream, replicas int, log *slog.Logger) (*UsageStore, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	replicas = max(replicas, 1)
	stream, err := openSideStream(ctx, js, jetstream.StreamConfig{
		Name:        UsageStream,
		Description: "keyledger: batches of key uses, merged by every instance (the rollup holds the older ones)",
		Subjects:    []string{UsageSubject},
		Storage:     jetstream.FileStorage,
		Replicas:    replicas,
		MaxAge:      UsageLogMaxAge,
		Discard:     jetstream.DiscardOld,
	})
	if err != nil {
		return nil, err
	}
	obs, err := openObjectStore(ctx, js, jetstream.ObjectStoreConfig{
		Bucket:      UsageRollupBucket,
		Description: "keyledger: every key's latest use, rolled up from " + UsageStream,
		Storage:     jetstream.FileStorage,
		Replicas:    replicas,
	})
	if err != nil {
		return nil, err
	}
	s := &UsageStore{js: js, stream: stream, obs: obs, log: log, origin: nuid.Next()}
	if s.legacy, err = openLegacyUsage(ctx, js, log); err != nil {
		return nil, err
	}
	return s, nil
}

// openLegacyUsage finds the bucket of earlier versions, if any, and gives
// it a max age in place: NATS changes a stream's max age without touching
// its messages, and then removes those older than it.
func openLegacyUsage(ctx context.Context, js jetstream.JetStream, log *slog.Logger) (jetstream.KeyValue, error) {
	kv, err := js.KeyValue(ctx, UsageBucket)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("key-value bucket %s: %w", UsageBucket, err)
	}
	st, err := js.Stream(ctx, backingStream("KV_", UsageBucket))
	if err != nil {
		return nil, fmt.Errorf("key-value bucket %s: %w", UsageBucket, err)
	}
	if cfg := st.CachedInfo().Config; cfg.MaxAge == 0 {
		cfg.MaxAge = UsageLegacyMaxAge
		if _, err := js.UpdateStream(ctx, cfg); err != nil {
			// Only its retention is at stake: keep going without it.
			log.Warn("could not give the legacy usage bucket a max age", "bucket", UsageBucket, "max_age", UsageLegacyMaxAge, "err", err)
		} else {
			log.Info("the legacy usage bucket now keeps entries for a day; delete it once no instance of an earlier version runs", "bucket", UsageBucket)
		}
	}
	return kv, nil
}

func (s *UsageStore) batchBytes() int {
	if s.BatchBytes > 0 {
		return s.BatchBytes
	}
	n := 256 << 10
	if mp := int(s.js.Conn().MaxPayload()); mp > 0 {
		n = min(n, mp/2)
	}
	return n
}

// Flush publishes uses in batches of many keys, each message at most
// BatchBytes, with at most Window messages awaiting their acknowledgement:
// it never waits on one before sending the next. It returns once every
// message is acknowledged, or with the first error; a use of a failed
// flush may have been stored anyway, which merging shrugs off.
func (s *UsageStore) Flush(ctx context.Context, uses []KeyUse) (FlushStats, error) {
	st := FlushStats{Uses: len(uses)}
	window := s.Window
	if window <= 0 {
		window = 16
	}
	pending := make([]jetstream.PubAckFuture, 0, window)
	wait := func(f jetstream.PubAckFuture) error {
		select {
		case <-f.Ok():
			return nil
		case err := <-f.Err():
			return fmt.Errorf("flush key usage: %w", err)
		case <-ctx.Done():
			return fmt.Errorf("flush key usage: %w", ctx.Err())
		}
	}
	limit := s.batchBytes()
	for rest := uses; len(rest) > 0; {
		var data []byte
		data, rest = encodeUses(make([]byte, 0, limit), rest, limit)
		if len(pending) == window {
			if err := wait(pending[0]); err != nil {
				return st, err
			}
			pending = append(pending[:0], pending[1:]...)
		}
		f, err := s.js.PublishMsgAsync(&nats.Msg{Subject: UsageSubject, Data: data, Header: nats.Header{usageOriginHeader: []string{s.origin}}})
		if err != nil {
			return st, fmt.Errorf("flush key usage: %w", err)
		}
		pending = append(pending, f)
		st.Messages++
		st.Bytes += len(data)
	}
	for _, f := range pending {
		if err := wait(f); err != nil {
			return st, err
		}
	}
	return st, nil
}

// Watch calls fn with every use the rollup holds (the first time only),
// then every use in the stream after the rollup, then each new one, until
// ctx ends; and with every entry of the legacy bucket while it exists.
func (s *UsageStore) Watch(ctx context.Context, fn func(org, id string, at time.Time)) error {
	var err error
	s.primed.Do(func() { err = s.readRollup(ctx, fn) })
	if err != nil {
		s.primed = sync.Once{} // read it again on the next try
		return err
	}
	s.hasMerge.Store(true)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if s.legacy != nil {
		go s.watchLegacy(ctx, fn)
	}
	from := s.applied.Load() + 1
	if info, err := s.stream.Info(ctx); err == nil && from > 1 && info.State.FirstSeq > from {
		s.log.Warn("key uses after the usage rollup have expired from the stream; some keys show an older last use",
			"rollup_covers_seq", from-1, "stream_first_seq", info.State.FirstSeq)
	}
	return followSubject(ctx, s.stream, UsageSubject, from, "watch key usage", func(seq uint64, m jetstream.Msg) error {
		if m.Headers().Get(usageOriginHeader) == s.origin {
			// This instance's own: it knows them already.
		} else if err := decodeUses(m.Data(), fn); err != nil {
			s.log.Warn("skipping a usage batch that cannot be read", "seq", seq, "err", err)
		}
		s.applied.Store(seq)
		return nil
	})
}

// followSubject calls fn with every message on subject in stream from
// sequence from on, with its stream sequence, then each new one, until
// ctx ends or fn fails; what names it in errors. One ordered consumer,
// which resets itself after faults.
func followSubject(ctx context.Context, stream jetstream.Stream, subject string, from uint64, what string, fn func(seq uint64, m jetstream.Msg) error) error {
	cfg := jetstream.OrderedConsumerConfig{FilterSubjects: []string{subject}, DeliverPolicy: jetstream.DeliverAllPolicy}
	if from > 1 {
		cfg.DeliverPolicy, cfg.OptStartSeq = jetstream.DeliverByStartSequencePolicy, from
	}
	c, err := stream.OrderedConsumer(ctx, cfg)
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	it, err := c.Messages()
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	defer it.Stop()
	stop := context.AfterFunc(ctx, it.Stop)
	defer stop()
	for {
		m, err := it.Next()
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if errors.Is(err, jetstream.ErrMsgIteratorClosed) {
				return fmt.Errorf("%s: %w", what, err)
			}
			continue // the ordered consumer resets itself
		}
		md, err := m.Metadata()
		if err != nil {
			continue
		}
		if err := fn(md.Sequence.Stream, m); err != nil {
			return err
		}
	}
}

// watchLegacy merges the legacy bucket's entries, "<org>.<key id>" → an
// RFC 3339 minute, until ctx ends.
func (s *UsageStore) watchLegacy(ctx context.Context, fn func(org, id string, at time.Time)) {
	w, err := s.legacy.WatchAll(ctx)
	if err != nil {
		s.log.Warn("watching the legacy usage bucket", "bucket", UsageBucket, "err", err)
		return
	}
	defer w.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case e, ok := <-w.Updates():
			if !ok {
				return
			}
			if e == nil || e.Operation() != jetstream.KeyValuePut {
				continue
			}
			org, id, ok := bytes.Cut([]byte(e.Key()), []byte("."))
			at, err := time.Parse(time.RFC3339, string(e.Value()))
			if ok && err == nil {
				fn(string(org), string(id), at)
			}
		}
	}
}

// RollupAge is how long ago the rollup was written; ok is false when there
// is none.
func (s *UsageStore) RollupAge(ctx context.Context) (age time.Duration, ok bool, err error) {
	info, err := s.obs.GetInfo(ctx, UsageRollupObject)
	if errors.Is(err, jetstream.ErrObjectNotFound) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, fmt.Errorf("usage rollup: %w", err)
	}
	return time.Since(info.ModTime), true, nil
}

// PutRollup replaces the rollup with what snapshot returns, which must
// hold everything merged so far: it is called after the stream's position
// is read, so the rollup covers every message up to it. It refuses until
// Watch has read the current rollup.
func (s *UsageStore) PutRollup(ctx context.Context, snapshot func() []KeyUse) (FlushStats, error) {
	if !s.hasMerge.Load() {
		// What this instance knows lacks the rollup: it would replace it
		// with less.
		return FlushStats{}, errors.New("usage rollup: not written before the current one has been read")
	}
	covers := s.applied.Load()
	uses := snapshot()
	st := FlushStats{Uses: len(uses)}
	pr, pw := io.Pipe()
	go func() {
		limit := 1 << 20
		buf := make([]byte, 0, limit)
		for rest := uses; len(rest) > 0; {
			buf, rest = encodeUses(buf[:0], rest, limit)
			if _, err := pw.Write(buf); err != nil {
				return
			}
		}
		pw.Close()
	}()
	info, err := s.obs.Put(ctx, jetstream.ObjectMeta{Name: UsageRollupObject,
		Metadata: map[string]string{usageRollupCovers: strconv.FormatUint(covers, 10)}}, pr)
	pr.CloseWithError(io.ErrClosedPipe) // ends the writer if Put stopped early
	if err != nil {
		return st, fmt.Errorf("usage rollup: %w", err)
	}
	st.Messages, st.Bytes = int(info.Chunks), int(info.Size)
	return st, nil
}

// readRollup merges the rollup, and notes the stream position it covers.
func (s *UsageStore) readRollup(ctx context.Context, fn func(org, id string, at time.Time)) error {
	r, err := s.obs.Get(ctx, UsageRollupObject)
	if errors.Is(err, jetstream.ErrObjectNotFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read the usage rollup: %w", err)
	}
	defer r.Close()
	info, err := r.Info()
	if err != nil {
		return fmt.Errorf("read the usage rollup: %w", err)
	}
	covers, _ := strconv.ParseUint(info.Metadata[usageRollupCovers], 10, 64)
	data, err := io.ReadAll(r)
	if err != nil {
		return fmt.Errorf("read the usage rollup: %w", err)
	}
	if err := decodeUses(data, fn); err != nil {
		s.log.Warn("part of the usage rollup cannot be read", "err", err)
	}
	s.applied.Store(covers)
	return nil
}
