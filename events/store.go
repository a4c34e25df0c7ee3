// Package events holds the event envelope and its JSON codec, and the
// JetStream event store: the stream KEYLEDGER, appends with optimistic
// concurrency per key, reads of a key's or an org's history, following the
// stream, and signed checkpoints and their audit. It is the client side
// only: the embedded nats-server is events/natsembed, so that importing
// events (or the verifier) takes on nats.go and none of nats-server.
package events

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/keyledger/keyledger/domain"
)

// The stream and its subjects (PRODUCT.md).
const (
	StreamName  = "KEYLEDGER"
	SubjectRoot = "keyledger.events"
	// CheckpointSubject carries the signed checkpoints, in the same stream.
	CheckpointSubject = "keyledger.checkpoints"
)

// WebhookToken is the last subject token of every event of a webhook
// endpoint (keyledger.events.<org>.<wh_id>.webhook): all of them are
// selected by WebhookSubjects.
const WebhookToken = "webhook"

// WebhookSubjects matches every endpoint event of every org.
const WebhookSubjects = SubjectRoot + ".*.*." + WebhookToken

// Subject is where an event of type t about org/key is published.
func Subject(org, key string, t domain.EventType) string {
	return SubjectRoot + "." + org + "." + key + "." + TypeToken(t)
}

// KeySubjects matches every event of one key.
func KeySubjects(org, key string) string { return SubjectRoot + "." + org + "." + key + ".*" }

// TypeToken is the last subject token of an event type.
func TypeToken(t domain.EventType) string {
	switch t {
	case domain.TypeKeyCreated:
		return "created"
	case domain.TypeKeyRotated:
		return "rotated"
	case domain.TypeKeyRevoked:
		return "revoked"
	case domain.TypeKeyLeakReported:
		return "leaked"
	}
	if domain.IsWebhookType(t) {
		return WebhookToken
	}
	return "unknown"
}

// Config is how the stream is laid out.
type Config struct {
	Replicas int // 1 when zero
	// Conflicts is how many times Update reloads and decides again after an
	// optimistic-concurrency conflict; 8 when zero.
	Conflicts int
	// ReadOnly says the credential may only read, as the subscriber's:
	// scans then leave their consumers to expire once idle (30 s) instead
	// of deleting them, which it may not.
	ReadOnly bool
	// Signer signs every event appended; a store without one may read but
	// not append. Signers is the trust set: the events that count are
	// those its keys signed (and the signer's own), or that a checkpoint
	// they signed vouches for.
	Signer  *Signer
	Signers *Signers
	Logger  *slog.Logger
}

// Store is the JetStream event store.
type Store struct {
	js        jetstream.JetStream
	stream    jetstream.Stream
	api       string // where js sends API requests: $JS.API. unless a domain or prefix says otherwise
	direct    bool   // the stream allows direct gets: scans need no consumer
	replicas  int
	conflicts int
	readOnly  bool
	mirror    bool // the stream is a mirror (an edge site's copy): no publish reaches it
	log       *slog.Logger
	cache     KeyCache
	stats     appendStats
	appended  func(domain.Event)
	trust     trustState
	chain     chainState
	identity  streamIdentity
}

// OnAppended calls fn with every event this store appends, as the stream
// holds it (decoded from the very body stored, with its sequence and
// hash, trusted: this store signed it), right after the server
// acknowledges it: a projection fed from
// here need not wait for the event to come back through a consumer. fn
// must be quick and safe for concurrent use. Set it before appending.
func (s *Store) OnAppended(fn func(domain.Event)) { s.appended = fn }

// AppendStats counts what this store appended since it opened.
type AppendStats struct {
	// Appended counts appended events by type.
	Appended map[domain.EventType]uint64
	// Conflicts counts appends refused because the key had changed since
	// it was read (optimistic concurrency); Retries counts the appends sent
	// again after one, or after a lost acknowledgement.
	Conflicts, Retries uint64
}

type appendStats struct {
	created, rotated, revoked, other atomic.Uint64
	conflicts, retries               atomic.Uint64
}

func (a *appendStats) count(t domain.EventType) {
	switch t {
	case domain.TypeKeyCreated:
		a.created.Add(1)
	case domain.TypeKeyRotated:
		a.rotated.Add(1)
	case domain.TypeKeyRevoked:
		a.revoked.Add(1)
	default:
		a.other.Add(1)
	}
}

// Stats returns the counts of appends so far.
func (s *Store) Stats() AppendStats {
	a := &s.stats
	out := AppendStats{
		Appended: map[domain.EventType]uint64{
			domain.TypeKeyCreated: a.created.Load(),
			domain.TypeKeyRotated: a.rotated.Load(),
			domain.TypeKeyRevoked: a.revoked.Load(),
		},
		Conflicts: a.conflicts.Load(),
		Retries:   a.retries.Load(),
	}
	if n := a.other.Load(); n > 0 {
		out.Appended["other"] = n
	}
	return out
}

// KeyCache is the state of keys that the projections already hold. It may
// lag the stream, never lead it.
type KeyCache interface {
	Get(org, id string) (domain.Key, bool)
}

// UseCache lets Update decide first on the state the projections hold, and
// read the key's events from the stream only when that state proves stale
// (the append's expected sequence does not match) or the decision refuses.
// Without it every Update reads the key's events: three round trips more.
func (s *Store) UseCache(c KeyCache) { s.cache = c }

var _ domain.Store = (*Store)(nil)

// Open creates the stream when it is missing and returns a store on it.
// An existing stream is never changed: it is refused, with what differs,
// when it has fewer replicas than asked or could lose events (deletes or
// purges allowed, limits that drop old events).
func Open(ctx context.Context, js jetstream.JetStream, cfg Config) (*Store, error) {
	if cfg.Replicas == 0 {
		cfg.Replicas = 1
	}
	stream, err := openStream(ctx, js, cfg.Replicas)
	if err != nil {
		return nil, err
	}
	return newStore(js, stream, cfg)
}

// Attach opens the existing stream without creating or changing it: what a
// read-only credential (the subscriber user) can do. Appends through such
// a store are refused by the server.
func Attach(ctx context.Context, js jetstream.JetStream, cfg Config) (*Store, error) {
	stream, err := js.Stream(ctx, StreamName)
	if cfg.ReadOnly && errors.Is(err, jetstream.ErrJetStreamNotEnabledForAccount) && apiPrefix(js) == jetstream.DefaultAPIPrefix {
		// The read-only credential of keyledger's own servers is in an
		// account of its own that reaches the stream as the JetStream
		// domain SubscriberDomain (an edge site's verifier user is not).
		if rjs, rerr := jetstream.NewWithDomain(js.Conn(), SubscriberDomain); rerr == nil {
			if rstream, rerr := rjs.Stream(ctx, StreamName); rerr == nil {
				js, stream, err = rjs, rstream, nil
			}
		}
	}
	if err != nil {
		return nil, fmt.Errorf("open stream %s: %w", StreamName, err)
	}
	return newStore(js, stream, cfg)
}

// JetStream is how the store reaches NATS: the one Attach or Open was
// given, or, for the read-only credential of keyledger's servers, one in
// SubscriberDomain.
func (s *Store) JetStream() jetstream.JetStream { return s.js }

func newStore(js jetstream.JetStream, stream jetstream.Stream, cfg Config) (*Store, error) {
	if cfg.Conflicts == 0 {
		cfg.Conflicts = 8
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	info := stream.CachedInfo().Config
	s := &Store{js: js, stream: stream, conflicts: cfg.Conflicts, readOnly: cfg.ReadOnly, log: cfg.Logger,
		api: apiPrefix(js), direct: info.AllowDirect, replicas: info.Replicas, mirror: info.Mirror != nil}
	s.identity.created = stream.CachedInfo().Created
	if !s.direct {
		s.log.Warn("stream " + StreamName + " does not allow direct gets: every read of the history creates a consumer; allow them with `nats stream edit " + StreamName + " --allow-direct` (keyledger never changes an existing stream)")
	}
	s.trust.signers.Store(cfg.Signers)
	if cfg.Signer != nil {
		if err := s.SetSigner(cfg.Signer); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// Create appends the first event of a new key. Returns ECONFLICT if the key
// id already has events, EUNAVAILABLE when NATS cannot be reached.
func (s *Store) Create(ctx context.Context, e domain.Event) (domain.Event, error) {
	e.PrevHash = ""
	return s.append(ctx, e, 0)
}

// Update loads, decides and appends in one call; see domain.Store.
func (s *Store) Update(ctx context.Context, org, id string, fn func(*domain.Key) ([]domain.Event, error)) (*domain.Key, error) {
	if k, ok := s.fromCache(ctx, org, id, fn); ok {
		return k, nil
	}
	return s.UpdateFromHistory(ctx, org, id, fn)
}

// UpdateFromHistory is Update deciding on the key as its whole history
// builds it, never on the projections' summary of it (which leaves out
// what only the history holds, such as the leaks reported).
func (s *Store) UpdateFromHistory(ctx context.Context, org, id string, fn func(*domain.Key) ([]domain.Event, error)) (*domain.Key, error) {
	prevLast, junk := "", 0
	for attempt := 1; ; attempt++ {
		evs, last, err := s.load(ctx, org, id)
		if err != nil {
			return nil, err
		}
		k, err := domain.Rebuild(evs)
		if err != nil {
			return nil, err
		}
		news, err := fn(k)
		if err != nil {
			return nil, err
		}
		lastHash := evs[len(evs)-1].Hash
		if attempt > 1 && lastHash == prevLast {
			junk++ // the last conflict was with messages that are not keyledger's
		}
		prevLast = lastHash
		expect := last
		if junk >= 2 {
			// Someone keeps publishing on the key's subjects: expecting
			// their last message cannot win. Append expecting nothing, and
			// see whether the event follows the key's last one (a key's
			// history is a chain: of two events that name the same last
			// one, the first counts).
			expect = noExpectation
		}
		err = s.appendAll(ctx, k, lastHash, expect, news)
		if err == nil && expect == noExpectation && !s.chained(ctx, org, id, k.Version) {
			err = domain.Errorf(domain.ECONFLICT, "the key was changed concurrently; try again")
		}
		if domain.ErrorCode(err) != domain.ECONFLICT || attempt >= s.conflicts+junk {
			return k, err
		}
		// Somebody else changed the key: wait a little, with jitter so that
		// contenders spread out, then decide again on the new state. After
		// a conflict with junk only, at once.
		s.stats.retries.Add(1)
		wait := time.Duration(attempt) * time.Millisecond * time.Duration(1+rand.IntN(5))
		if junk > 0 {
			wait = 0
		}
		select {
		case <-time.After(wait):
		case <-ctx.Done():
			return nil, domain.Wrap(domain.EUNAVAILABLE, ctx.Err(), "request ended before the key could be changed")
		}
	}
}

// fromCache decides on the projections' state of the key and appends
// expecting that state's version. It reports false, having appended
// nothing, when the state is missing or stale, or the decision refuses:
// a refusal may rest on stale state, so the stream's state decides again.
func (s *Store) fromCache(ctx context.Context, org, id string, fn func(*domain.Key) ([]domain.Event, error)) (*domain.Key, bool) {
	if s.cache == nil {
		return nil, false
	}
	k, ok := s.cache.Get(org, id)
	if !ok || k.LastHash == "" {
		return nil, false
	}
	news, err := fn(&k)
	if err != nil || len(news) != 1 {
		return nil, false // several events could half-land: only the loaded path takes them
	}
	if err := s.appendAll(ctx, &k, k.LastHash, k.Version, news); err != nil {
		if domain.ErrorCode(err) == domain.ECONFLICT {
			s.stats.retries.Add(1) // Update decides again on the stream's state
		}
		return nil, false
	}
	return &k, true
}

// appendAll appends news after the key's last event, whose stored hash is
// prevHash, chaining each to the one before. The stream's last message on
// the key's subjects must be at expected: k's version, or a later message
// that is not keyledger's (a forgery is never chained to, but must not
// keep the key from changing either).
func (s *Store) appendAll(ctx context.Context, k *domain.Key, prevHash string, expected uint64, news []domain.Event) error {
	for _, e := range news {
		e.PrevHash = prevHash
		e, err := s.append(ctx, e, expected)
		if err != nil {
			return err
		}
		prevHash, expected = e.Hash, e.Seq
		if err := k.Apply(e); err != nil {
			return domain.Wrap(domain.EINTERNAL, err, "cannot apply the new event")
		}
	}
	return nil
}

// append publishes e expecting that the last event of its key has the
// stream sequence expected (zero: that the key has no event yet), and
// returns it with its sequence and stored hash.
func (s *Store) append(ctx context.Context, e domain.Event, expected uint64) (domain.Event, error) {
	if domain.ValidateOrgID(e.OrgID) != nil || domain.ValidateAggregateID(e.KeyID) != nil {
		return e, domain.Errorf(domain.EINVALID, "event %s names no valid org and key", e.ID)
	}
	signer := s.Signer()
	if signer == nil {
		return e, domain.Errorf(domain.EINTERNAL, "this instance has no signing key: it may read the history, not add to it")
	}
	body, err := Encode(e)
	if err != nil {
		return e, domain.Wrap(domain.EINTERNAL, err, "cannot encode the event")
	}
	msg := &nats.Msg{Subject: Subject(e.OrgID, e.KeyID, e.Type), Data: body}
	signer.SignEvent(msg)
	opts := []jetstream.PublishOpt{
		jetstream.WithMsgID(e.ID),
		jetstream.WithExpectStream(StreamName),
	}
	if expected != noExpectation {
		opts = append(opts, jetstream.WithExpectLastSequenceForSubject(expected, KeySubjects(e.OrgID, e.KeyID)))
	}
	ack, err := s.js.PublishMsg(ctx, msg, opts...)
	if err != nil && ctx.Err() == nil && (errors.Is(err, nats.ErrTimeout) || errors.Is(err, context.DeadlineExceeded)) {
		// The ack may be what was lost: send the same message again. Its
		// Nats-Msg-Id keeps it from being stored twice.
		s.stats.retries.Add(1)
		ack, err = s.js.PublishMsg(ctx, msg, opts...)
	}
	if IsConflict(err) {
		// The server checks the expected sequence before duplicates: a
		// retry of an append that was stored answers "conflict". Look.
		if stored, ok := s.stored(ctx, e); ok {
			return stored, nil
		}
	}
	if IsConflict(err) {
		s.stats.conflicts.Add(1)
	}
	if err != nil {
		return e, publishError(err)
	}
	if !ack.Duplicate {
		s.stats.count(e.Type)
	}
	hash := BodyHash(body)
	s.trust.own.add(ack.Sequence, hash)
	if s.appended != nil {
		if stored, err := Decode(body, ack.Sequence); err == nil {
			stored.Hash, stored.Trusted = hash, true
			s.appended(stored)
		}
	}
	if ack.Duplicate {
		s.log.InfoContext(ctx, "append deduplicated", "event_id", e.ID, "seq", ack.Sequence)
	}
	e.Seq, e.Hash, e.Trusted = ack.Sequence, hash, true
	return e, nil
}

// noExpectation, as the expected sequence of an append, states none.
const noExpectation = ^uint64(0)

// chained reports whether the event at seq is in its key's history as
// read now: it follows the event before it.
func (s *Store) chained(ctx context.Context, org, id string, seq uint64) bool {
	evs, _, err := s.load(ctx, org, id)
	if err != nil {
		return false
	}
	for _, e := range evs {
		if e.Seq == seq {
			return true
		}
	}
	return false
}

// stored finds e among its key's events, as a retried append needs.
func (s *Store) stored(ctx context.Context, e domain.Event) (domain.Event, bool) {
	evs, err := s.Load(ctx, e.OrgID, e.KeyID)
	if err != nil {
		return e, false
	}
	for _, got := range evs {
		if got.ID == e.ID {
			s.log.InfoContext(ctx, "append was already stored", "event_id", e.ID, "seq", got.Seq)
			return got, true
		}
	}
	return e, false
}

// IsConflict reports whether err is JetStream's answer to a stale expected
// sequence: 10071, or 10164 on replicated streams.
func IsConflict(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) &&
		(apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
			apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant)
}

func publishError(err error) error {
	if IsConflict(err) {
		return domain.Wrap(domain.ECONFLICT, err, "the key was changed concurrently; try again")
	}
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) {
		return domain.Wrap(domain.EINTERNAL, err, "the event store refused the event")
	}
	return domain.Wrap(domain.EUNAVAILABLE, err, "the event store cannot be reached")
}
