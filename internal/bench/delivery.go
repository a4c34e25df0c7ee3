package bench

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"

	"github.com/keyledger/keyledger/domain"
	"github.com/keyledger/keyledger/events"
)

// sighting is one observer seeing one revocation.
type sighting struct {
	key, event string
	at         time.Time
}

// observers are the three ways a revocation reaches those who act on it,
// each watching the same revocations: a webhook receiver, a client of the
// SSE feed, and a plain core NATS subscription.
type observers struct {
	hook, sse, nats chan sighting
	errs            chan error
	// verifying is how long each of the receiver's signature checks took,
	// inside the webhook figure.
	mu        sync.Mutex
	verifying []time.Duration
}

func newObservers() *observers {
	return &observers{hook: make(chan sighting, 16), sse: make(chan sighting, 16), nats: make(chan sighting, 16), errs: make(chan error, 16)}
}

func (o *observers) fail(err error) {
	select {
	case o.errs <- err:
	default:
	}
}

// see hands on a sighting without ever blocking its sender (a handler, a
// NATS callback): at most one revocation is in flight, so a full channel
// is a fault of its own.
func (o *observers) see(ch chan<- sighting, s sighting) {
	select {
	case ch <- s:
	default:
		o.fail(fmt.Errorf("sightings of %s pile up unread", s.key))
	}
}

// await returns ch's sighting of key, passing over any other.
func (o *observers) await(ch <-chan sighting, key string, within time.Duration) (sighting, error) {
	timeout := time.After(within)
	for {
		select {
		case s := <-ch:
			if s.key == key {
				return s, nil
			}
		case err := <-o.errs:
			return sighting{}, err
		case <-timeout:
			return sighting{}, fmt.Errorf("not seen within %s", within)
		}
	}
}

// receiver is the webhook endpoint: it checks each delivery's signature
// with the Standard Webhooks library, as a receiver should, and that its
// webhook-id is the event's id, then answers 204.
func (o *observers) receiver(secret *atomic.Pointer[standardwebhooks.Webhook]) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		if err != nil {
			return
		}
		var env events.Envelope
		wh := secret.Load()
		start := time.Now()
		switch {
		case wh == nil:
			err = errors.New("a delivery before the endpoint's secret was known")
		case wh.Verify(body, r.Header) != nil:
			err = errors.New("a delivery whose signature does not verify")
		}
		took := time.Since(start)
		if err == nil && json.Unmarshal(body, &env) != nil {
			err = errors.New("a delivery that is no event envelope")
		}
		if id := r.Header.Get("webhook-id"); err == nil && id != env.EventID {
			err = fmt.Errorf("a delivery with webhook-id %q of event %q", id, env.EventID)
		}
		if err != nil {
			o.fail(fmt.Errorf("webhook: %w", err))
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		o.mu.Lock()
		o.verifying = append(o.verifying, took)
		o.mu.Unlock()
		at := time.Now()
		w.WriteHeader(http.StatusNoContent)
		o.see(o.hook, sighting{key: env.KeyID, event: env.EventID, at: at})
	})
}

// followSSE reads the org's revocations from the SSE feed until ctx ends;
// it returns once the feed has opened.
func (o *observers) followSSE(ctx context.Context, s *stack) error {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, s.url+"/v1/orgs/bench/events/stream?types="+string(domain.TypeKeyRevoked), nil)
	req.Header.Set("Authorization", "Bearer "+s.admin)
	res, err := (&http.Client{}).Do(req)
	if err != nil {
		return err
	}
	if res.StatusCode != http.StatusOK {
		res.Body.Close()
		return fmt.Errorf("event stream: %w", errStatus(res.StatusCode))
	}
	lines := bufio.NewReader(res.Body)
	if first, err := lines.ReadString('\n'); err != nil || !strings.HasPrefix(first, ":") {
		res.Body.Close()
		return fmt.Errorf("event stream: no opening comment (%q, %v)", first, err)
	}
	go func() {
		defer res.Body.Close()
		for {
			line, err := lines.ReadString('\n')
			if err != nil {
				if ctx.Err() == nil {
					o.fail(fmt.Errorf("event stream: %w", err))
				}
				return
			}
			data, ok := strings.CutPrefix(line, "data: ")
			if !ok {
				continue
			}
			at := time.Now()
			var env events.Envelope
			if err := json.Unmarshal([]byte(data), &env); err != nil {
				o.fail(fmt.Errorf("event stream: %w", err))
				return
			}
			o.see(o.sse, sighting{key: env.KeyID, event: env.EventID, at: at})
		}
	}()
	return nil
}

// subscribe follows the org's revocations on a core NATS subscription of
// its own connection, as a service on NATS would.
func (o *observers) subscribe(nc *nats.Conn) (*nats.Subscription, error) {
	sub, err := nc.Subscribe(events.Subject("bench", "*", domain.TypeKeyRevoked), func(m *nats.Msg) {
		at := time.Now()
		tokens := strings.Split(m.Subject, ".")
		o.see(o.nats, sighting{key: tokens[len(tokens)-2], event: m.Header.Get(jetstream.MsgIDHeader), at: at})
	})
	if err != nil {
		return nil, err
	}
	return sub, nc.Flush()
}

// deliveryWebhook creates the receiver's endpoint over the API, wanting
// revocations only (so that the creations between them queue nothing
// ahead), and waits until the deliverer runs its consumer.
func deliveryWebhook(ctx context.Context, s *stack, url string, secret *atomic.Pointer[standardwebhooks.Webhook]) error {
	var out struct {
		Webhook struct{ ID string }
		Secret  string
	}
	body := fmt.Sprintf(`{"url":%q,"event_types":[%q]}`, url, domain.TypeKeyRevoked)
	if err := s.call(http.DefaultClient, "POST", "/v1/orgs/bench/webhooks", body, &out); err != nil {
		return fmt.Errorf("creating the webhook: %w", err)
	}
	wh, err := standardwebhooks.NewWebhook(out.Secret)
	if err != nil {
		return err
	}
	secret.Store(wh)
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if _, err := s.js.Consumer(ctx, events.StreamName, s.vault.ConsumerName(out.Webhook.ID)); err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return errors.New("the webhook's consumer did not start within 10s")
		}
	}
}

// revocation is when one revocation was sent, acknowledged, and seen by
// each observer (webhook, SSE, NATS).
type revocation struct {
	sent, acked time.Time
	seen        [3]time.Time
}

// revokeOnce creates a key, revokes it over HTTP and waits until all three
// observers have seen the revocation, and the same event.
func revokeOnce(ctx context.Context, s *stack, client *http.Client, obs *observers) (revocation, error) {
	var r revocation
	k, err := s.keys.Create(ctx, domain.CreateKey{OrgID: "bench", Name: "doomed", By: benchBy})
	if err != nil {
		return r, err
	}
	r.sent = time.Now()
	if err := s.call(client, "DELETE", "/v1/orgs/bench/keys/"+k.Key.ID, "", nil); err != nil {
		return r, err
	}
	r.acked = time.Now()
	var event string
	for i, ch := range []chan sighting{obs.hook, obs.sse, obs.nats} {
		// 30 s: a first attempt that failed is retried after 5 s, and
		// then belongs in the figure.
		seen, err := obs.await(ch, k.Key.ID, 30*time.Second)
		if err != nil {
			return r, fmt.Errorf("%s: %w", []string{"webhook", "SSE", "NATS"}[i], err)
		}
		if event == "" {
			event = seen.event
		} else if seen.event != event {
			return r, fmt.Errorf("the observers saw events %s and %s for one revocation", event, seen.event)
		}
		r.seen[i] = seen.at
	}
	return r, nil
}

// delivery measures, for revocations acknowledged over HTTP (the DELETE
// answering), the time until each channel that carries them outside
// keyledger has: a webhook receiver on loopback answering 2xx to its
// delivery by serve's deliverer, a client of the SSE feed reading it, and
// a core NATS subscription receiving it. The three watch the same
// revocations, one at a time, so their rows compare.
//
// The targets: SSE and NATS carry the committed event on at once, so they
// share the propagation's (p99 ≤ 10 ms). A webhook is a pull consumer's
// fetch, the signature and a POST to the receiver, each a round trip of
// its own, and it waits for the projections' verdict on the event
// (events.Store.Judge looks again every 20 ms when the pull outran them,
// which is most of its tail); 50 ms keeps a revocation's delivery well
// under what a receiver acting on it would notice.
func delivery(ctx context.Context, o Options, _ *fixture) ([]Row, error) {
	s, err := newStackWith(ctx, filepath.Join(o.Dir, "delivery"), stackConfig{fsync: true, webhooks: true})
	if err != nil {
		return nil, err
	}
	defer s.stop()
	obs := newObservers()
	var secret atomic.Pointer[standardwebhooks.Webhook]
	hookURL, stopHook, err := serve(obs.receiver(&secret))
	if err != nil {
		return nil, err
	}
	defer stopHook()
	if err := deliveryWebhook(ctx, s, hookURL+"/hook", &secret); err != nil {
		return nil, err
	}
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if err := obs.followSSE(sctx, s); err != nil {
		return nil, err
	}
	nc, err := nats.Connect("", nats.InProcessServer(s.emb.Server))
	if err != nil {
		return nil, err
	}
	defer nc.Close()
	sub, err := obs.subscribe(nc)
	if err != nil {
		return nil, err
	}
	defer sub.Unsubscribe()

	n := 1000
	if o.Quick {
		n = 50
	}
	client := httpClient(1)
	// One revocation first, not counted: it shows the three running, and
	// opens the connections they keep.
	if _, err := revokeOnce(ctx, s, client, obs); err != nil {
		return nil, err
	}
	// From the acknowledgement, as the figure; an observer that saw it
	// before counts 0 (in one process that is common: the DELETE answers
	// only once this instance's projections applied it). From the DELETE
	// sent, as context: the whole way.
	var fromAck, fromSent [3][]time.Duration
	var early [3]int
	for range n {
		r, err := revokeOnce(ctx, s, client, obs)
		if err != nil {
			return nil, err
		}
		for i, at := range r.seen {
			fromAck[i] = append(fromAck[i], max(at.Sub(r.acked), 0))
			fromSent[i] = append(fromSent[i], at.Sub(r.sent))
			if at.Before(r.acked) {
				early[i]++
			}
		}
	}
	base, err := rawDelivered(ctx, s, nc, n)
	if err != nil {
		return nil, err
	}
	obs.mu.Lock()
	verifying := percentile(obs.verifying, 99)
	obs.mu.Unlock()
	channels := []struct{ name, target string }{
		{fmt.Sprintf("webhook receiver answered 2xx (serve's deliverer and defaults, with --webhooks-allow-http and --webhooks-allow-private for the loopback receiver; signatures verified with the Standard Webhooks library, p99 %s of it)", dur(verifying)), "p99 ≤ 20 ms"},
		{"SSE client (/v1/orgs/{org}/events/stream) read it", "p99 ≤ 10 ms"},
		{"core NATS subscription on " + events.Subject("{org}", "*", domain.TypeKeyRevoked) + " got it", "p99 ≤ 10 ms"},
	}
	limits := []time.Duration{20 * time.Millisecond, 10 * time.Millisecond, 10 * time.Millisecond}
	bp99 := percentile(base, 99)
	rows := make([]Row, 0, 3)
	for i, c := range channels {
		p99 := percentile(fromAck[i], 99)
		rows = append(rows, Row{
			Scenario: fmt.Sprintf("revocation delivery, acknowledged → %s, %d revocations", c.name, n),
			Figure: fmt.Sprintf("p50 %s, p99 %s (%d of %d before the ack, as 0; from the DELETE sent: p50 %s, p99 %s)",
				dur(percentile(fromAck[i], 50)), dur(p99), early[i], n, dur(percentile(fromSent[i], 50)), dur(percentile(fromSent[i], 99))),
			Baseline: fmt.Sprintf("raw publish sent → delivered: p50 %s, p99 %s", dur(percentile(base, 50)), dur(bp99)),
			Ratio:    float64(p99) / float64(max(bp99, 1)), Target: c.target, Met: p99 <= limits[i],
		})
	}
	return rows, nil
}

// rawDelivered is the propagation's baseline: n raw JetStream publishes,
// each from sent to delivered to a plain subscription on another
// connection.
func rawDelivered(ctx context.Context, s *stack, nc *nats.Conn, n int) ([]time.Duration, error) {
	got := make(chan time.Time, 1)
	sub, err := nc.Subscribe("keyledger.events.rawdelivery.>", func(*nats.Msg) { got <- time.Now() })
	if err != nil {
		return nil, err
	}
	defer sub.Unsubscribe()
	if err := nc.Flush(); err != nil {
		return nil, err
	}
	base := make([]time.Duration, 0, n)
	for range n {
		sent := time.Now()
		if _, err := s.js.Publish(ctx, events.Subject("rawdelivery", domain.NewKeyID(), domain.TypeKeyRevoked), []byte(`{}`)); err != nil {
			return nil, err
		}
		base = append(base, (<-got).Sub(sent))
	}
	return base, nil
}
