package webhooks

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

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
	// Judged says whether the event at seq is keyledger's (known false
	// until this instance's projections reach it): only those are sent.
	// It must be the Judged of the projections.Table that the runner feeds
	// itself (a Rejecter), as serve does: a table fed only through its
	// Listing never learns what the runner refused.
	Judged       func(seq uint64) (trusted, known bool)
	Client       *http.Client
	Timeout      time.Duration   // per attempt; 15 s when zero
	AckWait      time.Duration   // 60 s when zero; at least Timeout+5s
	Schedule     []time.Duration // Schedule when nil
	DisableAfter time.Duration   // 5 days when zero
	Replicas     int
	Instance     string // sent in User-Agent and kept with each attempt
	Log          *slog.Logger
	// OnResult, when set, is told each attempt's result: "succeeded",
	// "failed", "gave_up", "disabled" (410), "refused" (address).
	OnResult func(result string)
}

// Deliverer runs every enabled endpoint's deliveries.
type Deliverer struct {
	o        Options
	attempts jetstream.Stream
	state    jetstream.KeyValue
	mu       sync.Mutex
	secrets  map[string][]byte
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
		o.Client = NewClient(o.Timeout, false)
	}
	if o.OnResult == nil {
		o.OnResult = func(string) {}
	}
	d := &Deliverer{o: o, secrets: map[string][]byte{}}
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
		d.state, err = d.o.JS.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: StateBucket, Replicas: max(o.Replicas, 1), MaxBytes: 16 << 20, Description: "keyledger: webhook endpoints failing since"})
		if errors.Is(err, jetstream.ErrBucketExists) {
			d.state, err = d.o.JS.KeyValue(ctx, StateBucket)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("key-value bucket %s: %w", StateBucket, err)
	}
	return d, nil
}

// Run keeps one worker per enabled endpoint until ctx ends.
func (d *Deliverer) Run(ctx context.Context) {
	workers := map[string]context.CancelFunc{}
	gone := map[string]bool{}
	defer func() {
		for _, stop := range workers {
			stop()
		}
	}()
	for {
		all, changed := d.o.Registry.All()
		for _, w := range all {
			stop, running := workers[w.ID]
			switch {
			case w.Deleted:
				if running {
					stop()
					delete(workers, w.ID)
				}
				if !gone[w.ID] {
					gone[w.ID] = true
					_ = d.o.JS.DeleteConsumer(ctx, events.StreamName, d.o.Vault.ConsumerName(w.ID))
				}
			case w.Disabled:
				if running {
					stop()
					delete(workers, w.ID)
				}
			case !running:
				wctx, cancel := context.WithCancel(ctx)
				workers[w.ID] = cancel
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

// consumerConfig is endpoint w's durable consumer: its org's key events
// of the types it wants, from just after its creation, one in flight.
func (d *Deliverer) consumerConfig(w domain.Webhook) jetstream.ConsumerConfig {
	var subjects []string
	for _, t := range domain.WebhookEventTypes {
		if w.Wants(t) {
			subjects = append(subjects, events.SubjectRoot+"."+w.OrgID+".*."+events.TypeToken(t))
		}
	}
	return jetstream.ConsumerConfig{
		Durable: d.o.Vault.ConsumerName(w.ID), Description: "keyledger webhook " + w.ID,
		FilterSubjects: subjects, DeliverPolicy: jetstream.DeliverByStartSequencePolicy, OptStartSeq: w.CreatedSeq + 1,
		AckPolicy: jetstream.AckExplicitPolicy, AckWait: d.o.AckWait, MaxAckPending: 1, MaxDeliver: -1,
	}
}

func (d *Deliverer) work(ctx context.Context, w domain.Webhook) {
	var cons jetstream.Consumer
	for wait := 100 * time.Millisecond; ; wait = min(wait*2, 30*time.Second) {
		var err error
		if cons, err = d.o.JS.CreateOrUpdateConsumer(ctx, events.StreamName, d.consumerConfig(w)); err == nil {
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
			d.handle(ctx, w.ID, m)
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
}

func (d *Deliverer) handle(ctx context.Context, id string, m jetstream.Msg) {
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
	trusted, known := d.o.Judged(seq)
	for !known && ctx.Err() == nil {
		time.Sleep(20 * time.Millisecond)
		trusted, known = d.o.Judged(seq)
	}
	if !trusted {
		d.o.Log.Error("not delivering a message no trusted keyledger instance wrote", "webhook_id", id, "seq", seq)
		_ = m.Term()
		return
	}
	e, err := events.Decode(m.Data(), seq)
	if err != nil {
		_ = m.Term()
		return
	}
	env, err := events.ToEnvelope(e)
	if err != nil {
		_ = m.Term()
		return
	}
	body, _ := json.Marshal(env)
	a := Attempt{ID: ulid.Make().String(), WebhookID: id, EventID: e.ID, EventType: string(e.Type), KeyID: e.KeyID, Seq: seq, Attempt: int(md.NumDelivered), Instance: d.o.Instance}
	code, resp, ra, dur, err := d.send(ctx, w, e.ID, body)
	a.At, a.DurationMS, a.ResponseCode, a.Response = events.FormatTime(time.Now()), dur.Milliseconds(), code, resp
	if err != nil {
		a.Error = err.Error()
	}
	switch {
	case err == nil && code >= 200 && code < 300:
		a.Result = "succeeded"
		_ = m.DoubleAck(ctx)
		_, _ = d.state.Put(ctx, id, []byte(""))
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
			delay := jitter(d.o.Schedule[md.NumDelivered-1])
			if ra >= 0 {
				delay = ra
			}
			a.NextAt = events.FormatTime(time.Now().Add(delay))
			_ = m.NakWithDelay(delay)
		}
		if since := d.failingSince(ctx, id); time.Since(since) >= d.o.DisableAfter {
			d.disable(ctx, w, "failing since "+since.UTC().Format(time.RFC3339))
		}
	}
	d.o.OnResult(a.Result)
	d.record(ctx, w.OrgID, a)
}

// retryAfter reads a 429 or 503 answer's Retry-After, in seconds, at most
// a day; -1 when there is none to honour.
func retryAfter(res *http.Response) time.Duration {
	if res.StatusCode != http.StatusTooManyRequests && res.StatusCode != http.StatusServiceUnavailable {
		return -1
	}
	s, err := strconv.Atoi(strings.TrimSpace(res.Header.Get("Retry-After")))
	if err != nil || s < 0 {
		return -1
	}
	return min(time.Duration(s)*time.Second, 24*time.Hour)
}

func jitter(d time.Duration) time.Duration {
	return d + time.Duration((rand.Float64()*0.2-0.1)*float64(d))
}

// send posts body to w, signed; it returns the status, the first
// ResponseKept bytes of the answer, the Retry-After to honour (-1: none),
// and how long it took.
func (d *Deliverer) send(ctx context.Context, w domain.Webhook, id string, body []byte) (int, string, time.Duration, time.Duration, error) {
	secret, err := d.secret(ctx, w)
	if err != nil {
		return 0, "", -1, 0, err
	}
	ts := time.Now().Unix()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, w.URL, strings.NewReader(string(body)))
	if err != nil {
		return 0, "", -1, 0, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "keyledger-webhooks/1")
	req.Header.Set("webhook-id", id)
	req.Header.Set("webhook-timestamp", strconv.FormatInt(ts, 10))
	req.Header.Set("webhook-signature", Signature([][]byte{secret}, id, ts, body))
	start := time.Now()
	res, err := d.o.Client.Do(req)
	if err != nil {
		return 0, "", -1, time.Since(start), scrub(err, w.URL)
	}
	defer res.Body.Close()
	kept, _ := io.ReadAll(io.LimitReader(res.Body, ResponseKept))
	_, _ = io.Copy(io.Discard, io.LimitReader(res.Body, 64<<10))
	return res.StatusCode, strings.ToValidUTF8(string(kept), "�"), retryAfter(res), time.Since(start), nil
}

// scrub keeps an endpoint's URL (whose path or query may hold a token)
// out of an error that is logged and kept.
func scrub(err error, url string) error {
	return scrubbed{msg: strings.ReplaceAll(err.Error(), url, "<endpoint>"), err: err}
}

type scrubbed struct {
	msg string
	err error
}

func (s scrubbed) Error() string { return s.msg }
func (s scrubbed) Unwrap() error { return s.err }

func (d *Deliverer) secret(ctx context.Context, w domain.Webhook) ([]byte, error) {
	d.mu.Lock()
	s, ok := d.secrets[w.SecretRef]
	d.mu.Unlock()
	if ok {
		return s, nil
	}
	s, err := d.o.Vault.Get(ctx, w.ID, w.SecretRef)
	if err != nil {
		d.o.Log.Error("cannot open a webhook signing secret", "webhook_id", w.ID, "err", err)
		return nil, errors.New("the signing secret cannot be opened on this instance")
	}
	d.mu.Lock()
	d.secrets[w.SecretRef] = s
	d.mu.Unlock()
	return s, nil
}

// failingSince returns when endpoint id started failing without a success
// since, noting now when it was not failing.
func (d *Deliverer) failingSince(ctx context.Context, id string) time.Time {
	if ent, err := d.state.Get(ctx, id); err == nil && len(ent.Value()) > 0 {
		if t, err := time.Parse(time.RFC3339Nano, string(ent.Value())); err == nil {
			return t
		}
	}
	now := time.Now()
	_, _ = d.state.Put(ctx, id, []byte(now.UTC().Format(time.RFC3339Nano)))
	return now
}

func (d *Deliverer) disable(ctx context.Context, w domain.Webhook, reason string) {
	err := Disable(ctx, d.o.Store, w.OrgID, w.ID, domain.Actor{Kind: domain.ActorSystem, ID: "webhooks", Name: "keyledger webhooks"}, reason)
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
