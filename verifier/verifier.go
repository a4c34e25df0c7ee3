// Package verifier lets a service check keyledger keys in-process, with no
// network call per request: it replays the KEYLEDGER stream into its own
// copy of the verify index — the same projection code the service runs —
// and follows the stream, so a revocation reaches it as soon as the stream
// has it. It needs only a read-only NATS credential.
package verifier

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/keyledger/keyledger/domain"
	"github.com/keyledger/keyledger/events"
	"github.com/keyledger/keyledger/projections"
	"github.com/keyledger/keyledger/usage"
)

// Result is a verification: Code (VALID, MALFORMED, NOT_FOUND, REVOKED,
// EXPIRED), Deprecated, ExpiresAt, and the key unless it is unknown.
type Result = projections.Result

// Event is a change to a key, as appended to the stream.
type Event = domain.Event

// Signers is a trust set: the public keys of the keyledger instances
// whose events count.
type Signers = events.Signers

// ParseSigners reads a trust set: PEM public keys, as `keyledger audit
// pubkey` prints one and GET /v1/audit/signers serves them.
func ParseSigners(pem []byte) (*Signers, error) { return events.ParseSigners(pem) }

// Credentials is the connection option for the read-only credential: an
// NKey user seed file (SU…) or a .creds file, told apart by content; a
// file that is neither is an error that names it.
func Credentials(path string) (nats.Option, error) { return events.CredentialsOption(path) }

// Options configure a verifier; all but Signers are optional. Callbacks
// run on the verifier's one feed goroutine, in stream order, once per
// event, after the index has applied the event; a slow callback delays
// the index, so hand long work off.
type Options struct {
	// Signers is the trust set (required): only events signed by one of
	// its keys, or vouched for by a checkpoint one of them signed, are
	// applied. Anyone else who can publish to the stream — any holder of
	// the NATS service credential — can neither mint nor revoke a key in
	// the verifier. Give it the deployment's --event-signers file, read
	// from your own configuration, not fetched at start from the network.
	Signers   *Signers
	OnCreated func(Event)
	OnRotated func(Event)
	OnRevoked func(Event)
	// OnLeaked runs for a KeyLeakReported: a secret of the key was found
	// where it should not be (e.Data is a domain.KeyLeakReported, with the
	// URL). The revocation that usually follows comes to OnRevoked.
	OnLeaked func(Event)
	// FullReplay makes the verifier replay the stream from its first
	// event rather than start from the newest snapshot a trusted signer
	// signed: for a service whose callbacks must see every event of the
	// history (from a snapshot, they run only for the events after it).
	FullReplay bool
	// MaxStaleness, when not zero, makes Verify fail closed (Unavailable)
	// once the verifier has not been able to confirm for that long that it
	// holds everything the stream holds: its feed is cut off, and a
	// revocation made meanwhile would not reach it. Zero (the default)
	// keeps answering from memory through an outage: the service stays up,
	// at the price of honouring a key revoked during the outage until the
	// feed is back. Choose by which failure costs you more. On a mirror
	// (an edge site's copy of KEYLEDGER), a cut link to the main site
	// counts as a cut-off feed: see CurrentAt.
	MaxStaleness time.Duration
	// Service names this service in keyledger's usage insight: the
	// verifier counts its verifications of each key by outcome and
	// caller, as keyledger's own do, and reports them every ReportEvery
	// (a minute by default), batched, so that managers see in-process
	// verifications too (GET …/keys/{id}/usage). 1 to 128 letters, digits
	// or . _ - / :; empty: nothing is counted nor reported.
	Service string
	// ReportEvery is how often the counts are reported; a minute when
	// zero. A report keyledger did not answer is sent again with the next,
	// under the same id: the instance that counted it does not count it
	// again (another instance of the queue group would).
	ReportEvery time.Duration
	Logger      *slog.Logger
	Now         func() time.Time
}

// Caller is who presented a key to the service: its address (an IPv4
// address, an IPv6 /64) and User-Agent, as keyledger's usage insight shows
// callers; nothing else about a person.
type Caller = usage.Caller

// CallerOf is the caller of an HTTP request, as Middleware counts it.
func CallerOf(r *http.Request) Caller {
	return Caller{Address: usage.ClientAddress(r.RemoteAddr), UserAgent: r.Header.Get("User-Agent")}
}

// SubscriberInbox is the inbox prefix the read-only subscriber credential
// of keyledger's embedded server may receive replies on: connect with
// nats.CustomInboxPrefix(verifier.SubscriberInbox).
const SubscriberInbox = events.SubscriberInbox

// Unavailable is the code of a verification the verifier cannot vouch
// for: it has not replayed the stream yet (Ready is false), or, with
// Options.MaxStaleness, its feed has been cut off for longer than that.
// Such a result is never Valid; Middleware answers it with 503.
const Unavailable = "UNAVAILABLE"

// Verifier is a local, always-current verify index.
type Verifier struct {
	index  *projections.VerifyIndex
	runner *projections.Runner
	feed   *feed
	now    func() time.Time
	cancel context.CancelFunc
	done   chan struct{}
	from   atomic.Uint64 // the snapshot's sequence it started after; 0: none

	maxStaleness time.Duration
	outcomes     *usage.Outcomes // nil: not counted (no Options.Service)
	service      string
}

// New attaches to the KEYLEDGER stream through js and starts following it:
// from the newest snapshot a key of Options.Signers signed (bucket
// KEYLEDGER_SNAPSHOTS) and the events after it, or, when there is none to
// trust, from the stream's first event. Call Close to stop.
func New(ctx context.Context, js jetstream.JetStream, opts Options) (*Verifier, error) {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Service != "" && !usage.ValidService(opts.Service) {
		return nil, fmt.Errorf("verifier: Options.Service %q: 1 to %d letters, digits or . _ - / :", opts.Service, usage.MaxService)
	}
	if opts.Signers == nil {
		return nil, errors.New("verifier: Options.Signers is required: the public keys of the keyledger instances whose events to trust (keyledger audit pubkey; the deployment's --event-signers file)")
	}
	store, err := events.Attach(ctx, js, events.Config{Logger: opts.Logger, Signers: opts.Signers, ReadOnly: true})
	if err != nil {
		return nil, fmt.Errorf("verifier: %w", err)
	}
	js = store.JetStream()
	stream, err := js.Stream(ctx, events.StreamName)
	if err != nil {
		return nil, fmt.Errorf("verifier: open stream %s: %w", events.StreamName, err)
	}
	v := &Verifier{index: projections.NewVerifyIndex(), feed: &feed{Store: store, stream: stream}, now: opts.Now, done: make(chan struct{}), maxStaleness: opts.MaxStaleness}
	v.runner = projections.NewRunner(v.feed, opts.Logger, v.index, &callbacks{opts: opts})
	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	v.cancel = cancel
	if v.maxStaleness > 0 {
		// It asks the stream a few times per MaxStaleness how far it goes.
		v.runner.WatchEvery = min(max(v.maxStaleness/4, 20*time.Millisecond), 5*time.Second)
	}
	reported := make(chan struct{})
	if opts.Service != "" {
		v.outcomes, v.service = usage.NewOutcomes(), opts.Service
		v.outcomes.Now, v.outcomes.PendingWithinReach = opts.Now, true
		go func() {
			defer close(reported)
			v.report(runCtx, js.Conn(), cmp.Or(opts.ReportEvery, time.Minute), opts.Logger)
		}()
	} else {
		close(reported)
	}
	go func() {
		defer close(v.done)
		defer func() { <-reported }()
		if !opts.FullReplay && !v.startFromSnapshot(runCtx, js, store, opts.Logger) {
			return
		}
		_ = v.runner.Run(runCtx)
	}()
	return v, nil
}

// Verify tells what key is worth now, from memory; Unavailable until the
// verifier has replayed the stream, and, with MaxStaleness, while its feed
// has been cut off for longer than that.
func (v *Verifier) Verify(key string) Result { return v.VerifyFrom(key, Caller{}) }

// VerifyFrom is Verify, counting the verification against its key as
// made by caller (with Options.Service; see CallerOf).
func (v *Verifier) VerifyFrom(key string, caller Caller) Result {
	now := v.now()
	if !v.runner.Ready() || v.maxStaleness > 0 && now.Sub(v.CurrentAt()) > v.maxStaleness {
		return Result{Verdict: domain.Verdict{Code: Unavailable}}
	}
	res := v.index.Verify(key, now)
	if v.outcomes != nil {
		caller.Service = v.service
		v.outcomes.RecordVerdict(res.Verdict, res.Key, caller, now)
	}
	return res
}

// Ready reports whether the verifier has applied every event that was in
// the stream when it started.
func (v *Verifier) Ready() bool { return v.runner.Ready() }

// WaitReady returns once Ready, or with ctx's error.
func (v *Verifier) WaitReady(ctx context.Context) error { return v.runner.WaitReady(ctx) }

// Applied returns the stream sequence of the last event applied; a write
// acknowledged with X-Keyledger-Seq: N is reflected once Applied() >= N.
func (v *Verifier) Applied() uint64 { return v.runner.Applied() }

// WaitFor returns once the event at seq has been applied.
func (v *Verifier) WaitFor(ctx context.Context, seq uint64) error { return v.runner.WaitFor(ctx, seq) }

// Behind asks the stream how many events the verifier has yet to apply:
// on a mirror, those the mirror holds and, as it last said, those it has
// yet to copy from its origin.
func (v *Verifier) Behind(ctx context.Context) (uint64, error) {
	n, err := v.runner.Behind(ctx)
	if err != nil {
		return n, err
	}
	_, _, lag := v.feed.origin()
	return n + lag, nil
}

// CurrentAt is when the verifier was last seen to hold everything the
// stream held: what a verification now may have missed is what happened
// since. It asks the stream every second (a few times per MaxStaleness
// when set). On a mirror (an edge site's copy of the main site's stream,
// across a leaf node) it is also no later than when the mirror last held
// everything its origin held, so a cut link leaves it in the past even
// though the mirror itself is unchanged; after a cut, and at start, the
// mirror's word counts again once it has stayed in touch and caught up
// for 2 s. The zero time means never.
func (v *Verifier) CurrentAt() time.Time {
	at := v.runner.CurrentAt()
	if mirror, heard, _ := v.feed.origin(); mirror && heard.Before(at) {
		at = heard
	}
	return at
}

// Staleness is how long ago CurrentAt was; with MaxStaleness, Verify
// answers Unavailable once it is longer than that.
func (v *Verifier) Staleness() time.Duration { return v.now().Sub(v.CurrentAt()) }

// StartedAfter returns the sequence of the snapshot the verifier started
// from (it replayed only the events after it); 0 while it has not read
// one, and for a start that replayed the whole stream.
func (v *Verifier) StartedAfter() uint64 { return v.from.Load() }

// Close stops following the stream.
func (v *Verifier) Close() {
	v.cancel()
	<-v.done
}

// callbacks is the projection that tells the service of each event.
type callbacks struct {
	opts Options
	last uint64
}

func (c *callbacks) Apply(e domain.Event) error {
	c.last = e.Seq
	var fn func(Event)
	switch e.Type {
	case domain.TypeKeyCreated:
		fn = c.opts.OnCreated
	case domain.TypeKeyRotated:
		fn = c.opts.OnRotated
	case domain.TypeKeyRevoked:
		fn = c.opts.OnRevoked
	case domain.TypeKeyLeakReported:
		fn = c.opts.OnLeaked
	}
	if fn != nil && e.Data != nil {
		fn(e)
	}
	return nil
}

func (c *callbacks) LastSeq() uint64 { return c.last }
