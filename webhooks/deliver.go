package webhooks

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/oklog/ulid/v2"

	"github.com/keyledger/keyledger/domain"
	"github.com/keyledger/keyledger/events"
)

// Schedule is the Standard Webhooks retry schedule: after a first attempt
// at once, retries after these delays (each with ±10% jitter); the last
// failure gives the event up.
var Schedule = []time.Duration{5 * time.Second, 5 * time.Minute, 30 * time.Minute, 2 * time.Hour, 5 * time.Hour, 10 * time.Hour, 10 * time.Hour}

// Buckets and streams of the deliveries.
const (
	AttemptsStream = "KEYLEDGER_WEBHOOK_ATTEMPTS"
	attemptsRoot   = "keyledger_webhooks.attempts"
	StateBucket    = "KEYLEDGER_WEBHOOK_STATE"
	// AttemptsKept is how many attempts are kept per endpoint (30 days at most).
	AttemptsKept = 100
	// ResponseKept is how much of a response an attempt keeps.
	ResponseKept = 1024
)

// Options configure a Deliverer.
type Options struct {
	JS       jetstream.JetStream
	Store    *events.Store
	Vault    *Vault
	Registry *Registry
	// Only events Store judges keyledger's are sent (Store.Judge): with
	// the projections' verdicts where serve gives them (UseVerdicts), by
	// signature otherwise.
	Client       *http.Client
	Timeout      time.Duration   // per attempt; 15 s when zero
	AckWait      time.Duration   // 60 s when zero; at least Timeout+5s
	Schedule     []time.Duration // Schedule when nil
	DisableAfter time.Duration   // 5 days when zero
	Replicas     int
	Instance     string // kept with each attempt
	// AllowHTTP lets endpoints be http:// URLs; AllowPrivate lets them be
	// on loopback, private and link-local addresses (never a metadata
	// service). Both are for tests and private networks.
	AllowHTTP    bool
	AllowPrivate bool
	Log          *slog.Logger
	// OnResult, when set, is told each attempt's result (one of Results).
	OnResult func(result string)
}

// Results are the results an attempt may have: "succeeded" (2xx),
// "failed" (to be retried), "gave_up" (the schedule's last failure),
// "disabled" (410 Gone), "refused" (its address).
var Results = []string{"succeeded", "failed", "gave_up", "disabled", "refused"}

// Deliverer runs every enabled endpoint's deliveries.
type Deliverer struct {
	o        Options
	attempts jetstream.Stream
	state    jetstream.KeyValue
	states   jetstream.Stream // the state bucket's stream, to forget without a marker
	events   jetstream.Stream
	mu       sync.Mutex
	opened   map[string][]byte // sealed URLs and secrets by reference
	results  sync.Map          // result → *atomic.Uint64
}

// New returns a deliverer, creating its stream and bucket when missing.
func New(ctx context.Context, o Options) (*Deliverer, error) {
	if o.Timeout <= 0 {
		o.Timeout = 15 * time.Second
	}
	if o.AckWait <= 0 {
		o.AckWait = 60 * time.Second
	}
	o.AckWait = max(o.AckWait, o.Timeout+5*time.Second)
	if o.Schedule == nil {
		o.Schedule = Schedule
	}
	if o.DisableAfter <= 0 {
		o.DisableAfter = 5 * 24 * time.Hour
	}
	if o.Log == nil {
		o.Log = slog.Default()
	}
	if o.Client == nil {
		o.Client = NewClient(o.Timeout, o.AllowPrivate)
	}
	d := &Deliverer{o: o, opened: map[string][]byte{}}
	for _, r := range Results {
		d.results.Store(r, new(atomic.Uint64))
	}
	cfg := jetstream.StreamConfig{
		Name: AttemptsStream, Subjects: []string{attemptsRoot + ".>"}, Storage: jetstream.FileStorage,
		Replicas: max(o.Replicas, 1), MaxMsgsPerSubject: AttemptsKept, MaxAge: 30 * 24 * time.Hour,
		MaxBytes: 1 << 30, Discard: jetstream.DiscardOld, AllowDirect: true,
		Description: "keyledger: webhook delivery attempts",
	}
	var err error
	if d.attempts, err = d.o.JS.Stream(ctx, AttemptsStream); errors.Is(err, jetstream.ErrStreamNotFound) {
		d.attempts, err = d.o.JS.CreateStream(ctx, cfg)
		if errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
			d.attempts, err = d.o.JS.Stream(ctx, AttemptsStream)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("stream %s: %w", AttemptsStream, err)
	}
	if d.state, err = d.o.JS.KeyValue(ctx, StateBucket); errors.Is(err, jetstream.ErrBucketNotFound) {
		d.state, err = d.o.JS.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: StateBucket, Replicas: max(o.Replicas, 1), MaxBytes: 16 << 20, Description: "keyledger: webhook endpoints: slots, failing since, last delivered"})
		if errors.Is(err, jetstream.ErrBucketExists) {
			d.state, err = d.o.JS.KeyValue(ctx, StateBucket)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("key-value bucket %s: %w", StateBucket, err)
	}
	if d.states, err = d.o.JS.Stream(ctx, "KV_"+StateBucket); err != nil {
		return nil, fmt.Errorf("key-value bucket %s: %w", StateBucket, err)
	}
	if d.events, err = d.o.JS.Stream(ctx, events.StreamName); err != nil {
		return nil, fmt.Errorf("stream %s: %w", events.StreamName, err)
	}
	return d, nil
}

// Counts returns how many attempts this instance made, by result.
func (d *Deliverer) Counts() map[string]uint64 {
	out := map[string]uint64{}
	for _, r := range Results {
		v, _ := d.results.Load(r)
		out[r] = v.(*atomic.Uint64).Load()
	}
	return out
}

func (d *Deliverer) count(result string) {
	if v, ok := d.results.Load(result); ok {
		v.(*atomic.Uint64).Add(1)
	}
	if d.o.OnResult != nil {
		d.o.OnResult(result)
	}
}

// Run keeps one worker per enabled endpoint until ctx ends.
func (d *Deliverer) Run(ctx context.Context) {
	type worker struct {
		stop  context.CancelFunc
		shape string // what its consumer was made for
	}
	workers := map[string]worker{}
	// retiredTo holds, per endpoint, the generation below which its
	// consumers are deleted: each generation is retired once, as it is
	// passed, and a start retires only the last retireWindow ones, not
	// one per replay in the endpoint's life.
	retiredTo := map[string]int{}
	defer func() {
		for _, wk := range workers {
			wk.stop()
		}
	}()
	retire := func(w domain.Webhook) {
		upTo := w.Generation // replayed: the earlier consumers are done
		if w.Deleted {
			upTo++ // and a deleted endpoint's own
		}
		from, seen := retiredTo[w.ID]
		if !seen {
			from = max(0, upTo-retireWindow)
		}
		for g := from; g < upTo; g++ {
			_ = d.o.JS.DeleteConsumer(ctx, events.StreamName, d.consumerName(w.ID, g))
		}
		retiredTo[w.ID] = max(from, upTo)
	}
	for {
		all, changed := d.o.Registry.All()
		for _, w := range all {
			wk, running := workers[w.ID]
			shape := consumerShape(w)
			if running && (w.Deleted || w.Disabled || wk.shape != shape) {
				wk.stop()
				delete(workers, w.ID)
				running = false
			}
			retire(w)
			if !w.Deleted && !w.Disabled && !running {
				wctx, cancel := context.WithCancel(ctx)
				workers[w.ID] = worker{stop: cancel, shape: shape}
				go d.work(wctx, w)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-changed:
		case <-time.After(5 * time.Second):
		}
	}
}

// retireWindow is how many of an endpoint's latest generations an
// instance that has not seen them pass retires when it starts. The
// consumers of older ones were retired by the instances running then,
// each as it saw the next replay.
const retireWindow = 8

// consumerName names the consumer of an endpoint's generation g (its
// replays count them): each replay starts a consumer of its own.
func (d *Deliverer) consumerName(id string, g int) string {
	if g == 0 {
		return d.o.Vault.ConsumerName(id)
	}
	return d.o.Vault.ConsumerName(id + "/" + strconv.Itoa(g))
}

// subjects are the subjects of every key event of w's org, whatever w
// wants: handle skips what it does not. A consumer whose filter an update
// narrowed or widened would move past an event that landed before the
// change reached it, on a subject only the other filter takes; one filter
// for the endpoint's life never does. Never none, so that a consumer made
// from them never reads every org.
func subjects(w domain.Webhook) []string {
	out := make([]string, 0, len(domain.WebhookEventTypes))
	for _, t := range domain.WebhookEventTypes {
		out = append(out, events.SubjectRoot+"."+w.OrgID+".*."+events.TypeToken(t))
	}
	return out
}

// consumerShape is what w's consumer is made from: a worker whose
// endpoint changes shape starts again on the new consumer.
func consumerShape(w domain.Webhook) string {
	return strconv.Itoa(w.Generation) + " " + strings.Join(subjects(w), " ")
}

// consumerConfig is endpoint w's durable consumer: its org's key events,
// from just after its creation (or from the instant its last replay
// chose), one in flight.
func (d *Deliverer) consumerConfig(w domain.Webhook) (jetstream.ConsumerConfig, error) {
	subs := subjects(w)
	if len(subs) == 0 || domain.ValidateOrgID(w.OrgID) != nil {
		return jetstream.ConsumerConfig{}, fmt.Errorf("webhook %s wants no event of its org", w.ID)
	}
	c := jetstream.ConsumerConfig{
		Durable: d.consumerName(w.ID, w.Generation), Description: "keyledger webhook " + w.ID,
		FilterSubjects: subs, DeliverPolicy: jetstream.DeliverByStartSequencePolicy, OptStartSeq: w.CreatedSeq + 1,
		AckPolicy: jetstream.AckExplicitPolicy, AckWait: d.o.AckWait, MaxAckPending: 1, MaxDeliver: -1,
	}
	if w.Generation > 0 {
		from := w.ReplayFrom
		c.DeliverPolicy, c.OptStartSeq, c.OptStartTime = jetstream.DeliverByStartTimePolicy, 0, &from
	}
	return c, nil
}

func (d *Deliverer) work(ctx context.Context, w domain.Webhook) {
	cfg, err := d.consumerConfig(w)
	if err != nil {
		d.o.Log.Error("webhook endpoint not delivered", "webhook_id", w.ID, "err", err)
		return
	}
	var cons jetstream.Consumer
	for wait := 100 * time.Millisecond; ; wait = min(wait*2, 30*time.Second) {
		if cons, err = d.o.JS.CreateOrUpdateConsumer(ctx, events.StreamName, cfg); err == nil {
			break
		}
		d.o.Log.Warn("webhook consumer not ready; retrying", "webhook_id", w.ID, "err", err, "retry_in", wait)
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
	}
	for ctx.Err() == nil {
		fctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		batch, err := cons.Fetch(1, jetstream.FetchContext(fctx))
		if err != nil {
			cancel()
			if ctx.Err() == nil {
				d.o.Log.Warn("webhook fetch", "webhook_id", w.ID, "err", err)
				time.Sleep(time.Second)
			}
			continue
		}
		for m := range batch.Messages() {
			d.handle(ctx, w.ID, w.Generation, m)
		}
		cancel()
	}
}

// Attempt is one delivery attempt as kept and listed.
type Attempt struct {
	ID           string `json:"id"`
	WebhookID    string `json:"webhook_id"`
	EventID      string `json:"event_id"`
	EventType    string `json:"event_type"`
	KeyID        string `json:"key_id"`
	Seq          uint64 `json:"seq"`
	Attempt      int    `json:"attempt"`
	At           string `json:"at"`
	DurationMS   int64  `json:"duration_ms"`
	Result       string `json:"result"`
	ResponseCode int    `json:"response_code,omitempty"`
	Response     string `json:"response,omitempty"`
	Error        string `json:"error,omitempty"`
	NextAt       string `json:"next_attempt_at,omitempty"`
	Instance     string `json:"instance,omitempty"`
	// Manual is set on a redelivery or a test event a manager asked for.
	Manual bool `json:"manual,omitempty"`
}

func (d *Deliverer) handle(ctx context.Context, id string, gen int, m jetstream.Msg) {
	md, err := m.Metadata()
	if err != nil {
		_ = m.Term()
		return
	}
	seq := md.Sequence.Stream
	w, ok := d.o.Registry.byIDCopy(id)
	if !ok || w.Deleted {
		return
	}
	if w.Disabled {
		_ = m.NakWithDelay(2 * time.Second) // no instance pulls for a disabled endpoint: it waits for Enable
		return
	}
	if seq <= w.CreatedSeq {
		_ = m.DoubleAck(ctx) // a replay from before the endpoint was made
		return
	}
	e, body, err := d.judge(ctx, events.Msg{Seq: seq, Subject: m.Subject(), Header: m.Headers(), Data: m.Data()})
	if err != nil {
		if ctx.Err() == nil {
			d.o.Log.Error("not delivering a message no trusted keyledger instance wrote", "webhook_id", id, "seq", seq, "err", err)
			_ = m.Term()
		}
		return
	}
	if !w.Wants(e.Type) {
		// Its consumer reads every key event of the org (subjects).
		_ = m.DoubleAck(ctx)
		return
	}
	mark := d.delivered(ctx, id)
	if mark.Generation == gen && seq <= mark.Seq {
		// Answered 2xx already: the server had not yet written the
		// consumer's acknowledgement down when it was killed.
		_ = m.DoubleAck(ctx)
		return
	}
	a := d.attempt(ctx, w, e, body)
	a.Attempt.Attempt = int(md.NumDelivered)
	code, ra := a.ResponseCode, a.retryAfter
	err = a.err
	switch {
	case err == nil && code >= 200 && code < 300:
		a.Result = "succeeded"
		if gen >= mark.Generation {
			d.markDelivered(ctx, id, deliveredMark{Generation: gen, Seq: seq})
		}
		_ = m.DoubleAck(ctx)
		d.succeeded(ctx, id)
	case err == nil && code == http.StatusGone:
		a.Result = "disabled"
		d.disable(ctx, w, "the endpoint answered 410 Gone")
		_ = m.NakWithDelay(2 * time.Second) // no instance pulls for a disabled endpoint: it waits for Enable
	default:
		a.Result = "failed"
		if refused(err) {
			a.Result = "refused"
		}
		if int(md.NumDelivered) > len(d.o.Schedule) {
			a.Result = "gave_up"
			_ = m.Term()
		} else {
			// The schedule is a floor: a receiver may ask for more time,
			// never for its retries to come sooner and be spent at once.
			delay := max(jitter(d.o.Schedule[md.NumDelivered-1]), ra)
			a.NextAt = events.FormatTime(time.Now().Add(delay))
			_ = m.NakWithDelay(delay)
		}
		if since := d.failingSince(ctx, w); time.Since(since) >= d.o.DisableAfter {
			d.disable(ctx, w, "failing since "+since.UTC().Format(time.RFC3339))
		}
	}
	d.count(a.Result)
	d.record(ctx, w.OrgID, a.Attempt)
}

// judge reads a message of the history to deliver: the event when
// keyledger wrote it, and its envelope as sent.
func (d *Deliverer) judge(ctx context.Context, m events.Msg) (domain.Event, []byte, error) {
	e, ok, err := d.o.Store.Judge(ctx, m)
	if err == nil && !ok {
		err = errors.New("no trusted keyledger instance wrote it")
	}
	if err != nil {
		return e, nil, err
	}
	env, err := events.ToEnvelope(e)
	if err != nil {
		return e, nil, err
	}
	body, err := json.Marshal(env)
	return e, body, err
}

// sent is an attempt as made, with what deciding its next step needs.
type sent struct {
	Attempt
	retryAfter time.Duration
	err        error
}

// attempt sends body (the envelope of e) to w once.
func (d *Deliverer) attempt(ctx context.Context, w domain.Webhook, e domain.Event, body []byte) sent {
	a := sent{Attempt: Attempt{ID: ulid.Make().String(), WebhookID: w.ID, EventID: e.ID, EventType: string(e.Type), KeyID: e.KeyID, Seq: e.Seq, Attempt: 1, Instance: d.o.Instance}}
	code, resp, ra, dur, err := d.send(ctx, w, e.ID, body)
	a.At, a.DurationMS, a.ResponseCode, a.Response, a.retryAfter, a.err = events.FormatTime(time.Now()), dur.Milliseconds(), code, resp, ra, err
	if err != nil {
		a.Error = clip(err.Error(), ResponseKept)
	}
	return a
}

// clip keeps at most n bytes of s, cut at the start of a character, as
// valid UTF-8. A receiver writes an attempt's error as well as its
// answer (the HTTP client quotes a malformed status line whole, a
// certificate's every name), and both are kept only so far.
func clip(s string, n int) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	if len(s) > n {
		const more = "…"
		i := n - len(more)
		for i > 0 && !utf8.RuneStart(s[i]) {
			i--
		}
		s = s[:i] + more
	}
	return s
}

// maxRetryAfter bounds how long a receiver's Retry-After delays a retry.
const maxRetryAfter = 24 * time.Hour

// retryAfter reads a 429 or 503 answer's Retry-After, in seconds, at most
// a day (bounded before it becomes a Duration, which a larger number
// would overflow); -1 when there is none to honour.
func retryAfter(res *http.Response) time.Duration {
	if res.StatusCode != http.StatusTooManyRequests && res.StatusCode != http.StatusServiceUnavailable {
		return -1
	}
	s, err := strconv.ParseUint(strings.TrimSpace(res.Header.Get("Retry-After")), 10, 64)
	if err != nil {
		if errors.Is(err, strconv.ErrRange) {
			return maxRetryAfter
		}
		return -1
	}
	return time.Duration(min(s, uint64(maxRetryAfter/time.Second))) * time.Second
}

func jitter(d time.Duration) time.Duration {
	return d + time.Duration((rand.Float64()*0.2-0.1)*float64(d))
}

// send posts body to w, signed; it returns the status, the first
// ResponseKept bytes of the answer, the Retry-After to honour (-1: none),
// and how long it took.
func (d *Deliverer) send(ctx context.Context, w domain.Webhook, id string, body []byte) (int, string, time.Duration, time.Duration, error) {
	var secrets [][]byte
	for _, ref := range w.Signing(time.Now()) {
		s, err := d.open(ctx, w.ID, ref)
		if err != nil {
			return 0, "", -1, 0, errors.New("the signing secret cannot be opened on this instance")
		}
		secrets = append(secrets, s)
	}
	target, err := d.open(ctx, w.ID, w.URLRef)
	if err != nil {
		return 0, "", -1, 0, errors.New("the endpoint's URL cannot be opened on this instance")
	}
	ts := time.Now().Unix()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, string(target), strings.NewReader(string(body)))
	if err != nil {
		return 0, "", -1, 0, errors.New("the endpoint's URL is not one a request can be made to")
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "keyledger-webhooks/1")
	req.Header.Set("webhook-id", id)
	req.Header.Set("webhook-timestamp", strconv.FormatInt(ts, 10))
	req.Header.Set("webhook-signature", Signature(secrets, id, ts, body))
	start := time.Now()
	res, err := d.o.Client.Do(req)
	if err != nil {
		return 0, "", -1, time.Since(start), scrub(err, w.URLMasked)
	}
	defer res.Body.Close()
	kept, _ := io.ReadAll(io.LimitReader(res.Body, ResponseKept))
	_, _ = io.Copy(io.Discard, io.LimitReader(res.Body, 64<<10))
	return res.StatusCode, clip(string(kept), ResponseKept), retryAfter(res), time.Since(start), nil
}

// scrub keeps an endpoint's URL (whose path or query may hold a token)
// out of an error that is logged and kept: the client's errors name the
// URL (quoted or not, escaped or not), so the error kept is only what
// went wrong beneath it, said of the masked URL. Dial errors beneath name
// the address, never the path.
func scrub(err error, masked string) error {
	inner := err
	var ue *url.Error
	if errors.As(err, &ue) {
		inner = ue.Err
		for errors.As(inner, &ue) {
			inner = ue.Err
		}
	}
	msg := "POST " + masked
	var rf *refusal
	var dns *net.DNSError
	switch {
	case errors.As(inner, &rf):
		// Not the address it resolved to (the dial error names it): a
		// manager naming internal hosts would map the network.
		msg += ": " + rf.Error()
	case errors.As(inner, &dns):
		// Nor the instance's resolver, which the lookup error names.
		msg += ": lookup " + dns.Name + ": " + dnsReason(dns)
	case ue != nil && ue.Timeout() || errors.Is(err, context.DeadlineExceeded):
		msg += ": timed out"
	default:
		msg += ": " + inner.Error()
	}
	return scrubbed{msg: msg, err: inner}
}

// dnsReason says why a lookup failed without naming the resolver.
func dnsReason(e *net.DNSError) string {
	switch {
	case e.IsNotFound:
		return "no such host"
	case e.IsTimeout:
		return "timed out"
	}
	return "the name could not be resolved"
}

type scrubbed struct {
	msg string
	err error
}

func (s scrubbed) Error() string { return s.msg }
func (s scrubbed) Unwrap() error { return s.err }

// open returns what ref seals for endpoint id (its URL, a secret),
// opened once per instance.
func (d *Deliverer) open(ctx context.Context, id, ref string) ([]byte, error) {
	d.mu.Lock()
	s, ok := d.opened[ref]
	d.mu.Unlock()
	if ok {
		return s, nil
	}
	s, err := d.o.Vault.Get(ctx, id, ref)
	if err != nil {
		d.o.Log.Error("cannot open what a webhook endpoint sealed", "webhook_id", id, "ref", ref, "err", err)
		return nil, err
	}
	d.mu.Lock()
	if len(d.opened) > 4*domain.MaxWebhooksPerOrg*64 {
		clear(d.opened) // refs of deleted endpoints and replaced secrets
	}
	d.opened[ref] = s
	d.mu.Unlock()
	return s, nil
}

// deliveredMark is the last event of an endpoint's generation that its
// receiver answered 2xx, kept in the state bucket (synced like every
// write) before the acknowledgement. A consumer's acknowledgements reach
// the server's disk only every 100 ms or so, and an instance killed in
// that window comes back to hand out again what was answered: the mark
// stops it being sent twice.
type deliveredMark struct {
	Generation int    `json:"generation"`
	Seq        uint64 `json:"seq"`
}

func deliveredKey(id string) string { return "delivered." + id }

// delivered reads endpoint id's mark; none (and so every event sent)
// when it cannot be read: at least once comes first.
func (d *Deliverer) delivered(ctx context.Context, id string) deliveredMark {
	var m deliveredMark
	if ent, err := d.state.Get(ctx, deliveredKey(id)); err == nil {
		_ = json.Unmarshal(ent.Value(), &m)
	}
	return m
}

func (d *Deliverer) markDelivered(ctx context.Context, id string, m deliveredMark) {
	data, _ := json.Marshal(m)
	if _, err := d.state.Put(ctx, deliveredKey(id), data); err != nil {
		d.o.Log.Warn("cannot keep where a webhook endpoint's deliveries stand; a crash now may send one again", "webhook_id", id, "err", err)
	}
}

// succeeded clears endpoint id's failing-since mark, when it has one.
func (d *Deliverer) succeeded(ctx context.Context, id string) {
	if ent, err := d.state.Get(ctx, id); err == nil && len(ent.Value()) > 0 {
		_, _ = d.state.Put(ctx, id, []byte(""))
	}
}

// forgetState removes what the state bucket holds of a deleted endpoint,
// leaving no marker: endpoints made and deleted without end must not
// fill the bucket every org shares.
func (d *Deliverer) forgetState(ctx context.Context, id string) {
	for _, k := range []string{id, deliveredKey(id)} {
		_ = d.states.Purge(ctx, jetstream.WithPurgeSubject("$KV."+StateBucket+"."+k))
	}
}

// failingSince returns when endpoint w started failing without a success
// since, noting now when it was not failing, or when it failed only
// before it was last enabled.
func (d *Deliverer) failingSince(ctx context.Context, w domain.Webhook) time.Time {
	if ent, err := d.state.Get(ctx, w.ID); err == nil && len(ent.Value()) > 0 {
		if t, err := time.Parse(time.RFC3339Nano, string(ent.Value())); err == nil && !t.Before(w.EnabledAt) {
			return t
		}
	}
	now := time.Now()
	_, _ = d.state.Put(ctx, w.ID, []byte(now.UTC().Format(time.RFC3339Nano)))
	return now
}

func (d *Deliverer) disable(ctx context.Context, w domain.Webhook, reason string) {
	_, err := d.Disable(ctx, domain.SystemPrincipal("webhooks", "keyledger webhooks"), w.OrgID, w.ID, reason)
	if err != nil {
		d.o.Log.Error("cannot disable a webhook endpoint", "webhook_id", w.ID, "err", err)
		return
	}
	d.o.Log.Warn("webhook endpoint disabled", "webhook_id", w.ID, "reason", reason)
}

func (d *Deliverer) record(ctx context.Context, org string, a Attempt) {
	data, _ := json.Marshal(a)
	if _, err := d.o.JS.Publish(ctx, attemptsRoot+"."+org+"."+a.WebhookID, data); err != nil {
		d.o.Log.Warn("cannot keep a webhook attempt", "webhook_id", a.WebhookID, "err", err)
	}
}

// Attempts returns endpoint id's kept attempts, newest first, at most limit.
func (d *Deliverer) Attempts(ctx context.Context, org, id string, limit int) ([]Attempt, error) {
	subj := attemptsRoot + "." + org + "." + id
	var out []Attempt
	for seq := uint64(1); ; {
		m, err := d.attempts.GetMsg(ctx, seq, jetstream.WithGetMsgSubject(subj))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			break
		}
		if err != nil {
			return nil, err
		}
		var a Attempt
		if json.Unmarshal(m.Data, &a) == nil {
			out = append(out, a)
		}
		seq = m.Sequence + 1
	}
	for i, j := 0, len(out)-1; i < j; i, j = i+1, j-1 {
		out[i], out[j] = out[j], out[i]
	}
	if len(out) > limit {
		out = out[:limit]
	}
	return out, nil
}
