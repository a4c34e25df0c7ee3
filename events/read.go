package events

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/keyledger/keyledger/domain"
)

// Load returns the events of one key, oldest first; none for an unknown
// key. Only keyledger's events count: anything else stored under the key's
// subjects is left out. Returns EINVALID for ids that could not name a
// subject, EUNAVAILABLE.
func (s *Store) Load(ctx context.Context, org, id string) ([]domain.Event, error) {
	evs, _, err := s.load(ctx, org, id)
	return evs, err
}

// load is Load, with the sequence of the last message stored under the
// key's subjects, keyledger's or not: what the next append must expect. A
// signed event that does not follow the key's last one (a copy published
// again) is left out too: it belongs to no history.
func (s *Store) load(ctx context.Context, org, id string) (evs []domain.Event, last uint64, err error) {
	if err := domain.ValidateOrgID(org); err != nil {
		return nil, 0, err
	}
	if err := domain.ValidateKeyID(id); err != nil {
		return nil, 0, err
	}
	var k domain.Key
	err = s.Scan(ctx, KeySubjects(org, id), 1, func(m Msg) error {
		last = m.Seq
		e, ok, err := s.read(m)
		if err != nil || !ok || !k.Follows(e) || k.Apply(e) != nil {
			return err
		}
		evs = append(evs, e)
		return nil
	})
	return evs, last, err
}

// read judges and decodes a message of the history: ok is false for one
// that is not keyledger's, which is neither decoded nor shown.
func (s *Store) read(m Msg) (e domain.Event, ok bool, err error) {
	hash := BodyHash(m.Data)
	if !s.trusted(m, hash) {
		return e, false, nil
	}
	e, err = Decode(m.Data, m.Seq)
	if err != nil {
		return e, false, domain.Wrap(domain.EINTERNAL, err, "a stored event cannot be read")
	}
	e.Hash, e.Trusted = hash, true
	return e, true, nil
}

// OrgEvents reads, from the stream, a page of org's events (q): at most
// q.Limit that match q.Filter, oldest first, having examined at most
// q.Budget; the last sequence examined, to ask after next; and whether
// more may follow. A filter on one key reads only that key's subjects.
// Events of types this code does not know, and events keyledger did not
// write, are examined, never returned. Returns EINVALID, EUNAVAILABLE.
func (s *Store) OrgEvents(ctx context.Context, org string, q domain.EventQuery) (page []domain.Event, next uint64, more bool, err error) {
	if err := domain.ValidateOrgID(org); err != nil {
		return nil, 0, false, err
	}
	filter := SubjectRoot + "." + org + ".>"
	if id := q.Filter.KeyID; id != "" {
		if err := domain.ValidateKeyID(id); err != nil {
			return nil, 0, false, err
		}
		filter = KeySubjects(org, id)
	}
	next, examined := q.After, 0
	err = s.Scan(ctx, filter, q.After+1, func(m Msg) error {
		if len(page) == q.Limit || q.Budget > 0 && examined == q.Budget {
			more = true
			return errPageFull
		}
		if s.unjudged(m.Seq) {
			return errPageFull // this instance's projections have not reached it: shown once they have
		}
		e, ok, err := s.read(m)
		if err != nil {
			return err
		}
		examined, next = examined+1, m.Seq
		if ok && e.Data != nil && q.Filter.Match(e) {
			page = append(page, e)
		}
		return nil
	})
	if errors.Is(err, errPageFull) {
		err = nil
	}
	return page, next, more, err
}

var errPageFull = errors.New("page full")

// EachTrusted calls fn with every event keyledger wrote among those
// matching filter from sequence from on, in order, judged as a replay
// judges them (by the signed checkpoints that list them, else by their
// signatures), and returns how many others it left out. It first tells
// onTotal, when not nil, how many messages it will read. For readers with
// no projections beside them: an audit's export.
func (s *Store) EachTrusted(ctx context.Context, filter string, from uint64, onTotal func(uint64), fn func(domain.Event) error) (skipped int, err error) {
	cov := s.cover(ctx, from)
	defer cov.stop()
	err = s.ScanCounted(ctx, filter, from, onTotal, func(m Msg) error {
		if !m.IsEvent() {
			return nil
		}
		hash := BodyHash(m.Data)
		if s.judgeFollowed(m, hash, cov) != "" {
			skipped++
			return nil
		}
		e, err := Decode(m.Data, m.Seq)
		if err != nil {
			return domain.Wrap(domain.EINTERNAL, err, "a stored event cannot be read")
		}
		e.Hash, e.Trusted = hash, true
		return fn(e)
	})
	return skipped, err
}

// EachKeyEvent calls fn with every event keyledger wrote of the keys ids
// of org, in stream order, unless they have more than most events in all (0: no
// bound): then it reads none and reports ok false, so that a caller can
// ask for fewer keys. total is their number of events either way, known
// before any is read. Returns EINVALID, EUNAVAILABLE, or fn's error.
func (s *Store) EachKeyEvent(ctx context.Context, org string, ids []string, most uint64, fn func(domain.Event) error) (total uint64, ok bool, err error) {
	if err := domain.ValidateOrgID(org); err != nil {
		return 0, false, err
	}
	filters := make([]string, len(ids))
	for i, id := range ids {
		if err := domain.ValidateKeyID(id); err != nil {
			return 0, false, err
		}
		filters[i] = KeySubjects(org, id)
	}
	if len(ids) == 0 {
		return 0, true, nil
	}
	err = s.scan(ctx, filters, 1, func(n uint64) error {
		if total = n; most > 0 && n > most {
			return errTooMany
		}
		return nil
	}, func(m Msg) error {
		if s.unjudged(m.Seq) {
			return errPageFull // not applied here yet: the fold stops where this instance stands
		}
		e, ok, err := s.read(m)
		if !ok || err != nil {
			return err
		}
		return fn(e)
	})
	if errors.Is(err, errTooMany) {
		return total, false, nil
	}
	if errors.Is(err, errPageFull) {
		err = nil
	}
	return total, err == nil, err
}

var errTooMany = errors.New("more events than asked for")

// Msg is a stored message as read back: an event or a checkpoint.
type Msg struct {
	Seq     uint64
	Subject string
	Header  nats.Header
	Data    []byte
}

// IsEvent reports whether m is an event (not a checkpoint).
func (m Msg) IsEvent() bool { return strings.HasPrefix(m.Subject, SubjectRoot+".") }

// BodyHash is the SHA-256 (hex) of a stored message body: what prev_hash
// and checkpoints refer to.
func BodyHash(body []byte) string {
	sum := sha256.Sum256(body)
	return hex.EncodeToString(sum[:])
}

// scanBatch bounds the memory of a scan through a consumer, whatever the
// stream's size.
const scanBatch = 256

// Scan calls fn with every message matching filter from sequence from on,
// as the stream stands when the scan starts, in order and in batches, so
// that memory stays flat however long the stream. It creates no consumer
// when the stream allows direct gets (direct.go). Returns EUNAVAILABLE, or
// fn's error.
func (s *Store) Scan(ctx context.Context, filter string, from uint64, fn func(Msg) error) error {
	return s.ScanCounted(ctx, filter, from, nil, fn)
}

// ScanCounted is Scan that first tells onTotal how many messages it will
// read (for a progress bar).
func (s *Store) ScanCounted(ctx context.Context, filter string, from uint64, onTotal func(uint64), fn func(Msg) error) error {
	return s.scan(ctx, []string{filter}, from, func(n uint64) error {
		if onTotal != nil {
			onTotal(n)
		}
		return nil
	}, fn)
}

// scan reads the messages matching any of filters (which must not
// overlap) from sequence from on, first telling onTotal how many there
// are; an error from onTotal ends the scan before anything is read.
func (s *Store) scan(ctx context.Context, filters []string, from uint64, onTotal func(uint64) error, fn func(Msg) error) error {
	if s.direct {
		return s.scanDirect(ctx, filters, from, onTotal, fn)
	}
	return s.scanConsumer(ctx, filters, from, onTotal, fn)
}

// scanConsumer is scan through an ephemeral consumer, created and deleted
// again: for a stream that does not allow direct gets (one made by an
// operator without allow_direct).
func (s *Store) scanConsumer(ctx context.Context, filters []string, from uint64, onTotal func(uint64) error, fn func(Msg) error) error {
	cfg := jetstream.ConsumerConfig{
		DeliverPolicy:     jetstream.DeliverAllPolicy,
		AckPolicy:         jetstream.AckNonePolicy,
		MemoryStorage:     true,
		InactiveThreshold: 30 * time.Second,
	}
	if len(filters) == 1 {
		cfg.FilterSubject = filters[0]
	} else {
		cfg.FilterSubjects = filters
	}
	if from > 1 {
		cfg.DeliverPolicy, cfg.OptStartSeq = jetstream.DeliverByStartSequencePolicy, from
	}
	c, err := s.stream.CreateConsumer(ctx, cfg)
	if err != nil {
		return domain.Wrap(domain.EUNAVAILABLE, err, "the event store cannot be reached")
	}
	defer func() {
		if s.readOnly {
			return // it expires by itself
		}
		// A fresh context: the consumer should go even if ctx has ended.
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
		defer cancel()
		_ = s.stream.DeleteConsumer(dctx, c.CachedInfo().Name)
	}()
	if err := onTotal(c.CachedInfo().NumPending); err != nil {
		return err
	}
	for pending := c.CachedInfo().NumPending; pending > 0; {
		batch, err := c.Fetch(int(min(pending, scanBatch)), jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			return domain.Wrap(domain.EUNAVAILABLE, err, "the event store cannot be reached")
		}
		got := 0
		for m := range batch.Messages() {
			md, err := m.Metadata()
			if err != nil {
				return domain.Wrap(domain.EINTERNAL, err, "a stored message has no metadata")
			}
			got++
			if err := fn(Msg{Seq: md.Sequence.Stream, Subject: m.Subject(), Header: m.Headers(), Data: m.Data()}); err != nil {
				return err
			}
		}
		if err := batch.Error(); err != nil {
			return domain.Wrap(domain.EUNAVAILABLE, err, "the event store cannot be reached")
		}
		if got == 0 {
			return domain.Errorf(domain.EUNAVAILABLE, "the event store did not deliver the stream")
		}
		pending -= uint64(got)
	}
	return nil
}

// LastSeq returns the sequence of the last message in the stream. Each
// answer also tells whether the stream is still the one this store opened
// (see StreamLost); once it is not, LastSeq fails.
func (s *Store) LastSeq(ctx context.Context) (uint64, error) {
	if why := s.StreamLost(); why != "" {
		return 0, domain.Errorf(domain.EUNAVAILABLE, "%s", why)
	}
	info, err := s.stream.Info(ctx)
	if why := s.identity.judge(info, err, s.log); why != "" {
		return 0, domain.Errorf(domain.EUNAVAILABLE, "%s", why)
	}
	if err != nil {
		return 0, domain.Wrap(domain.EUNAVAILABLE, err, "the event store cannot be reached")
	}
	return info.State.LastSeq, nil
}

// Follow calls fn with every event from sequence from on, in stream order,
// until ctx ends or fn fails, each judged: Trusted when keyledger wrote it
// (it appended it itself, a signed checkpoint lists it by its hash, or a
// trusted signer signed it). Messages that are not events (checkpoints)
// and events that cannot be decoded (logged) come with nil Data, so that
// the sequence still advances; a message that is not an event is no
// event to refuse, and comes Trusted.
func (s *Store) Follow(ctx context.Context, from uint64, fn func(domain.Event) error) error {
	var in interner // org ids, actors and scopes repeat from event to event
	cov := s.cover(ctx, from)
	defer cov.stop()
	defer s.feedChain(from)()
	return s.FollowRaw(ctx, from, func(m Msg) error {
		if !m.IsEvent() {
			if m.Subject == CheckpointSubject {
				s.placeFromFeed(m)
			}
			return fn(domain.Event{Seq: m.Seq, Trusted: true})
		}
		hash := BodyHash(m.Data)
		trusted := s.judgeFollowed(m, hash, cov) == ""
		e := s.event(m, &in, trusted)
		e.Hash, e.Trusted = hash, trusted
		return fn(e)
	})
}

// judgeFollowed judges a followed event: "" when keyledger wrote it.
//
// A signed checkpoint only ever vouches for an event, never against one:
// an event it lists as not vouched for still counts when its signature
// verifies with this instance's trust set (the instance that wrote the
// checkpoint may have lacked a key its trust set has since). It vouches
// for a signed event only while the event's signer is trusted at that
// sequence (not retired before it), and a version 1 checkpoint vouches
// only for unsigned events written before signing began, that is before
// the first signed event or version 2 checkpoint this reader met.
func (s *Store) judgeFollowed(m Msg, hash string, cov *coverage) Unsigned {
	if s.trust.own.take(m.Seq, hash) {
		return ""
	}
	why, covered, legacy := cov.judge(m.Seq, hash)
	signer := headerValue(m.Header, SignerHeader)
	switch {
	case !covered || why == NotVouched:
	case why != "":
		return why // the stream holds another event where the checkpoint signed this one
	case legacy && signer == "" && !cov.signing:
		return ""
	case !legacy && signer != "" && s.Signers().Trusts(signer, m.Seq):
		cov.signing = true
		return ""
	}
	why = s.Signers().VerifyEvent(m.Seq, m.Subject, m.Data, m.Header)
	if why == "" {
		cov.signing = true
	}
	return why
}

// event decodes a followed event; a failure is logged only for one that
// keyledger wrote (anything else is refused whole, and reported so).
func (s *Store) event(m Msg, in *interner, trusted bool) domain.Event {
	e, ok := decodeFastIn(m.Data, m.Seq, in)
	var err error
	if !ok {
		e, err = decodeJSON(m.Data, m.Seq)
	}
	if err != nil && trusted {
		s.log.Error("skipping an event that cannot be decoded", "seq", m.Seq, "err", err)
	}
	return e
}

// FollowRaw calls fn with every message from sequence from on, in stream
// order, until ctx ends or fn fails. It runs one ordered consumer, which
// survives reconnects and resumes after the last message it delivered; a
// read-only store on a stream of its own site asks by direct gets instead
// (followDirect).
func (s *Store) FollowRaw(ctx context.Context, from uint64, fn func(Msg) error) error {
	if s.readOnly && s.direct && !s.mirror {
		return s.followDirect(ctx, from, fn)
	}
	cfg := jetstream.OrderedConsumerConfig{DeliverPolicy: jetstream.DeliverAllPolicy}
	if from > 1 {
		cfg.DeliverPolicy, cfg.OptStartSeq = jetstream.DeliverByStartSequencePolicy, from
	}
	ctx, cancel := context.WithCancel(ctx) // ends the watcher below when fn fails
	defer cancel()
	c, err := s.stream.OrderedConsumer(ctx, cfg)
	if err != nil {
		return fmt.Errorf("follow the stream: %w", err)
	}
	it, err := c.Messages()
	if err != nil {
		return fmt.Errorf("follow the stream: %w", err)
	}
	defer it.Stop()
	go func() {
		<-ctx.Done()
		it.Stop()
	}()
	failingSince := time.Time{}
	next := max(from, 1) // the sequence the next message has, the stream having lost none
	for {
		m, err := it.Next()
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if errors.Is(err, jetstream.ErrMsgIteratorClosed) {
				return fmt.Errorf("follow the stream: %w", err)
			}
			// The ordered consumer resets itself after most faults; if it
			// keeps failing, start over from the caller's last sequence.
			if failingSince.IsZero() {
				failingSince = time.Now()
			} else if time.Since(failingSince) > 10*time.Second {
				return fmt.Errorf("follow the stream: failing for %s: %w", time.Since(failingSince).Round(time.Second), err)
			}
			s.log.Warn("following the stream", "err", err)
			_, _ = s.LastSeq(ctx) // the error may be the stream deleted or replaced: judge it now
			continue
		}
		failingSince = time.Time{}
		md, err := m.Metadata()
		if err != nil {
			s.log.Error("skipping a message without metadata", "subject", m.Subject(), "err", err)
			continue
		}
		msg := Msg{Seq: md.Sequence.Stream, Subject: m.Subject(), Header: m.Headers(), Data: m.Data()}
		if msg.Seq < next {
			continue // passed on already: not this consumer's delivery
		}
		if msg.Seq != next || len(msg.Data) == 0 {
			if why := s.misdelivered(ctx, next, msg); why != "" {
				return fmt.Errorf("follow the stream: %s", why)
			}
		}
		next = msg.Seq + 1
		if err := fn(msg); err != nil {
			return err
		}
	}
}

// misdelivered asks the stream itself about a delivery that skips
// sequences after the one before it (next was due), or comes without a
// body: "" when the stream holds just that (the messages between were
// deleted; the message is empty), else what is wrong. Every holder of a
// read-only credential shares its account and inbox prefix with the
// others, so it sees their deliveries, the name of each one's consumer in
// their ack subjects, and may update that consumer (CONSUMER.CREATE of an
// existing name): a filter that leaves revocations out, or headers only,
// would have the feed pass over events for good. Or it may pull from a
// consumer of its own with a follower's inbox as the reply. The feed is
// then started again, from the last message passed on.
func (s *Store) misdelivered(ctx context.Context, next uint64, m Msg) string {
	stored, ok, err := s.leaderNext(ctx, ">", next)
	switch {
	case err != nil:
		return fmt.Sprintf("cannot check the delivery of sequence %d: %v", m.Seq, err)
	case !ok || stored.Seq < m.Seq:
		return fmt.Sprintf("the consumer skipped sequence %d (changed by another holder of the credential?)", next)
	case stored.Seq > m.Seq || stored.Subject != m.Subject:
		return fmt.Sprintf("the consumer delivered a message the stream does not hold at sequence %d", m.Seq)
	case len(m.Data) == 0 && len(stored.Data) > 0:
		return fmt.Sprintf("the consumer delivered sequence %d without its body (changed by another holder of the credential?)", m.Seq)
	}
	return ""
}

// followPoll is how often followDirect asks the stream with nothing to
// wake it: a checkpoint (its subject is not among the events a reader may
// subscribe to), or a wake-up lost on the way, waits at most this.
const followPoll = time.Second

// followDirect is FollowRaw for the read-only credential: batches of
// direct gets by sequence, asked again whenever an event is published (a
// plain subscription to keyledger.events.>, which the read-only account
// imports) and every followPoll. A reader makes no consumer: every holder
// of the shared credential sees the others' inboxes and could find and
// change a consumer by its name, and the stream's consumers are few
// (nats-server allows 1,000 by default; a reader that may make them fills
// them for good). The stream loses no message (no delete, no purge), so
// every batch must begin at the sequence due and go on without a gap: a
// batch that does not (an answer another holder had the server send to
// this inbox) ends the follow, and the caller starts it again from the
// last message passed on.
func (s *Store) followDirect(ctx context.Context, from uint64, fn func(Msg) error) error {
	nc := s.js.Conn()
	wake := make(chan struct{}, 1)
	sub, err := nc.Subscribe(SubjectRoot+".>", func(*nats.Msg) {
		select {
		case wake <- struct{}{}:
		default:
		}
	})
	if err == nil {
		defer func() { _ = sub.Unsubscribe() }()
	}
	tick := time.NewTicker(followPoll)
	defer tick.Stop()
	next := max(from, 1)
	woken, failingSince := false, time.Time{}
	var retry time.Duration // the wait before asking again for what woke it
	for {
		msgs, pending, err := s.directGet(ctx, "", next, directBatch)
		if err == nil && len(msgs) == 0 && woken && s.replicas > 1 {
			// A replica behind the event that woke it: the leader has it.
			var m Msg
			var ok bool
			if m, ok, err = s.leaderNext(ctx, ">", next); ok {
				msgs = []Msg{m}
			}
		}
		switch {
		case ctx.Err() != nil:
			return ctx.Err()
		case err != nil:
			if failingSince.IsZero() {
				failingSince = time.Now()
			} else if time.Since(failingSince) > 10*time.Second {
				return fmt.Errorf("follow the stream: failing for %s: %w", time.Since(failingSince).Round(time.Second), err)
			}
			s.log.Warn("following the stream", "err", err)
		default:
			failingSince = time.Time{}
		}
		for _, m := range msgs {
			if m.Seq != next {
				return fmt.Errorf("follow the stream: sequence %d came where %d was due (an answer sent here by another holder of the credential?)", m.Seq, next)
			}
			next++
			if err := fn(m); err != nil {
				return err
			}
		}
		if err == nil && len(msgs) > 0 && (len(msgs) == directBatch || pending >= uint64(len(msgs))) {
			continue // more are there already (a batch ends at its count or its bytes)
		}
		// Woken for nothing: a subscriber may be told of a message before
		// the stream has stored it. Ask again soon, sooner first, until it
		// is there or the wait is the poll's.
		var soon <-chan time.Time
		if woken && len(msgs) == 0 {
			retry = min(max(2*retry, 100*time.Microsecond), followPoll/4)
			soon = time.After(retry)
		} else {
			retry = 0
		}
		woken = false
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-wake:
			woken, retry = true, 0
		case <-soon:
			woken = true
		case <-tick.C:
		}
	}
}
