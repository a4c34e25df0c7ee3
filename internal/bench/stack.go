package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"path/filepath"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/keyledger/keyledger/domain"
	"github.com/keyledger/keyledger/events"
	"github.com/keyledger/keyledger/events/natsembed"
	khttp "github.com/keyledger/keyledger/http"
	"github.com/keyledger/keyledger/projections"
	"github.com/keyledger/keyledger/webhooks"
)

// stack is keyledger as serve runs it: an embedded nats-server syncing
// every write (the default), the projections, and the API on a port.
type stack struct {
	emb    *natsembed.Server
	js     jetstream.JetStream
	store  *events.Store
	runner *projections.Runner
	keys   *domain.Keys
	url    string
	admin  string
	stop   func()
	// hooks delivers webhooks, as serve does, when newStack was asked to
	// (withWebhooks); its admin then also holds webhooks:manage.
	hooks *webhooks.Deliverer
	vault *webhooks.Vault
}

func newStack(ctx context.Context, dir string, fsync bool) (*stack, error) {
	return newStackWith(ctx, dir, stackConfig{fsync: fsync})
}

// stackConfig says what a stack runs beside the API.
type stackConfig struct {
	fsync bool
	// webhooks delivers them as serve does: the endpoint registry fed by
	// the projections' runner, and the deliverer started once they hold
	// the stream, with serve's defaults except that endpoints may be
	// http:// and on loopback (--webhooks-allow-http,
	// --webhooks-allow-private), where the bench's receiver listens.
	webhooks bool
	// listen opens the embedded server's client port on loopback, as
	// serve's --nats-listen does, for an instance in another process.
	listen bool
	// cluster runs on three clustered nats-servers (in this process) with
	// the stream replicated three times, connected over loopback as
	// serve's --nats-url --stream-replicas 3 is, instead of the embedded
	// server.
	cluster bool
}

// newStackWith is newStack, with what cfg adds.
func newStackWith(ctx context.Context, dir string, cfg stackConfig) (*stack, error) {
	if cfg.cluster {
		c, err := startCluster(dir)
		if err != nil {
			return nil, err
		}
		nc, err := c.connect()
		if err != nil {
			c.stop()
			return nil, err
		}
		s, err := newStackOn(ctx, nc, dir, cfg.webhooks, 3)
		if err != nil {
			nc.Close()
			c.stop()
			return nil, err
		}
		stop := s.stop
		s.stop = func() { stop(); nc.Close(); c.stop() }
		return s, nil
	}
	listen := ""
	if cfg.listen {
		listen = "127.0.0.1:0"
	}
	emb, err := natsembed.Start(natsembed.Config{Dir: dir, Fsync: cfg.fsync, Listen: listen,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		return nil, err
	}
	s, err := newStackOn(ctx, emb.Conn, dir, cfg.webhooks, 1)
	if err != nil {
		emb.Close()
		return nil, err
	}
	s.emb = emb
	stop := s.stop
	s.stop = func() { stop(); emb.Close() }
	return s, nil
}

// newStackOn runs keyledger as serve does on a NATS connection it does
// not own (stop leaves nc to its owner): a server of the caller's making,
// such as the edge scenario's hub or a cluster, with the stream
// replicated as asked.
func newStackOn(ctx context.Context, nc *nats.Conn, dir string, withWebhooks bool, replicas int) (*stack, error) {
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	s := &stack{}
	var err error
	if s.js, err = jetstream.New(nc); err != nil {
		return nil, err
	}
	// A cluster just formed may not have elected its JetStream leader yet.
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		s.store, err = events.Open(ctx, s.js, events.Config{Logger: quiet, Signer: newSigner(), Replicas: replicas})
		if err == nil || replicas == 1 || time.Now().After(deadline) {
			break
		}
	}
	if err != nil {
		return nil, err
	}
	table := projections.NewTable()
	listing, index := table.Listing(), table.Index()
	applied := []projections.Projection{table}
	var reg *webhooks.Registry
	if withWebhooks {
		reg = webhooks.NewRegistry()
		if err := reg.Prime(ctx, s.store.EachWebhookEvent); err != nil {
			return nil, err
		}
		applied = append(applied, reg)
	}
	s.runner = projections.NewRunner(s.store, quiet, applied...)
	s.store.UseCache(listing)
	s.store.UseVerdicts(table)
	s.store.WaitVerdicts(s.runner.WaitFor)
	s.store.OnAppended(s.runner.Offer)
	rctx, cancel := context.WithCancel(ctx)
	go func() { _ = s.runner.Run(rctx) }()
	s.keys = &domain.Keys{Store: s.store}
	api := &khttp.Server{Keys: s.keys, Listing: listing, Index: index, Log: s.store, Runner: s.runner,
		Logger: slog.New(slog.NewJSONHandler(io.Discard, nil))}
	scopes := []string{domain.ScopeManage}
	if withWebhooks {
		if err := s.startWebhooks(rctx, dir, reg, quiet); err != nil {
			cancel()
			return nil, err
		}
		api.Webhooks = s.hooks
		scopes = append(scopes, domain.ScopeWebhooks)
	}
	url, stopHTTP, err := serve(api.Handler())
	if err != nil {
		cancel()
		return nil, err
	}
	s.url = url
	s.stop = func() { stopHTTP(); cancel() }
	admin, err := s.keys.Create(ctx, domain.CreateKey{OrgID: "bench", Name: "bench admin", Scopes: scopes, By: benchBy})
	if err != nil {
		s.stop()
		return nil, err
	}
	s.admin = admin.Secret
	if err := s.runner.WaitFor(ctx, admin.Key.Version); err != nil {
		s.stop()
		return nil, err
	}
	return s, nil
}

// startWebhooks is serve's startWebhooks on the stack.
func (s *stack) startWebhooks(ctx context.Context, dir string, reg *webhooks.Registry, log *slog.Logger) error {
	key, err := webhooks.LoadKey(filepath.Join(dir, "webhook-secrets.key"), true)
	if err != nil {
		return err
	}
	if s.vault, err = webhooks.OpenVault(ctx, s.js, key, 1); err != nil {
		return err
	}
	s.hooks, err = webhooks.New(ctx, webhooks.Options{
		JS: s.js, Store: s.store, Vault: s.vault, Registry: reg, Replicas: 1,
		AllowHTTP: true, AllowPrivate: true, Instance: "bench", Log: log,
	})
	if err != nil {
		return err
	}
	go func() {
		if s.runner.WaitReady(ctx) == nil {
			s.hooks.Run(ctx)
		}
	}()
	return nil
}

// call sends a manager request and decodes the answer into out.
func (s *stack) call(client *http.Client, method, path, body string, out any) error {
	req, _ := http.NewRequest(method, s.url+path, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+s.admin)
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	res, err := client.Do(req)
	if err != nil {
		return err
	}
	defer res.Body.Close()
	if res.StatusCode >= 300 {
		return errStatus(res.StatusCode)
	}
	if out != nil {
		return json.NewDecoder(res.Body).Decode(out)
	}
	_, _ = io.Copy(io.Discard, res.Body)
	return nil
}

// commands measures create, rotate and revoke over HTTP beside raw
// JetStream publishes with the same expected-sequence header, on the same
// server with the same sync setting, at the same concurrency.
func commands(ctx context.Context, o Options, _ *fixture) ([]Row, error) {
	return commandsOn(ctx, o, "commands", "", stackConfig{fsync: true})
}

// replicatedCommands is commands on a three-node cluster with the stream
// replicated three times: the write rate of one replicated stream, with
// keyledger's commands and raw publishes side by side, and the most raw
// writes it takes in a burst (publishes in flight without waiting).
func replicatedCommands(ctx context.Context, o Options, _ *fixture) ([]Row, error) {
	return commandsOn(ctx, o, "replicated", " on a 3-node cluster, R3 (three nats-servers in this process, loopback routes, sync always)", stackConfig{cluster: true})
}

// commandsOn is commands on the stack cfg makes, its rows named with on.
func commandsOn(ctx context.Context, o Options, dir, on string, cfg stackConfig) ([]Row, error) {
	s, err := newStackWith(ctx, filepath.Join(o.Dir, dir), cfg)
	if err != nil {
		return nil, err
	}
	defer s.stop()
	// Not a baseline the target is judged on, but what part of a command's
	// time the HTTP round trip itself takes: a bare handler answering 201.
	bareURL, stopBare, err := serve(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusCreated)
		_, _ = w.Write([]byte(`{"key":{}}`))
	}))
	if err != nil {
		return nil, err
	}
	defer stopBare()
	body, _ := events.Encode(domain.Event{ID: "x", Type: domain.TypeKeyCreated, Data: domain.KeyCreated{Name: "bench", SecretHash: domain.HashSecret("x"), Masked: "c8k_****abcd"}})
	var rows []Row
	for _, c := range []int{1, 16} {
		client := httpClient(c)
		ids := make([]string, c)
		ours := func() loadResult {
			return load(c, o.window(), func(w, i int) error {
				switch i % 3 {
				case 0:
					var out struct{ Key struct{ ID string } }
					err := s.call(client, "POST", "/v1/orgs/bench/keys", `{"name":"bench"}`, &out)
					ids[w] = out.Key.ID
					return err
				case 1:
					return s.call(client, "POST", "/v1/orgs/bench/keys/"+ids[w]+"/rotate", "", nil)
				}
				return s.call(client, "DELETE", "/v1/orgs/bench/keys/"+ids[w], "", nil)
			})
		}
		raw := func() loadResult {
			return load(c, o.window(), func(w, i int) error {
				id := domain.NewKeyID()
				_, err := s.js.PublishMsg(ctx, &nats.Msg{Subject: events.Subject("raw", id, domain.TypeKeyCreated), Data: body},
					jetstream.WithMsgID(domain.NewEventID()),
					jetstream.WithExpectLastSequenceForSubject(0, events.KeySubjects("raw", id)))
				return err
			})
		}
		got, base := alternate(o.rounds(), ours, raw)
		bare := &stack{url: bareURL}
		trip := load(c, o.window(), func(w, i int) error {
			return bare.call(client, "POST", "/", `{"name":"bench"}`, nil)
		})
		client.CloseIdleConnections()
		if got.errors > 0 || base.errors > 0 || trip.errors > 0 {
			return nil, fmt.Errorf("%d commands, %d publishes and %d bare round trips failed", got.errors, base.errors, trip.errors)
		}
		ratio := got.perSecond() / base.perSecond()
		rows = append(rows, Row{
			Scenario: fmt.Sprintf("commands over HTTP (create, rotate, revoke)%s, %d client(s)", on, c),
			Figure:   fmt.Sprintf("%s/s, p50 %s, p99 %s", count(got.perSecond()), dur(got.p50), dur(got.p99)),
			Baseline: fmt.Sprintf("raw publish: %s/s, p50 %s, p99 %s (bare HTTP round trip: p50 %s)", count(base.perSecond()), dur(base.p50), dur(base.p99), dur(trip.p50)),
			Ratio:    ratio, Target: "≥ 0.9 × raw publish", Met: ratio >= 0.9,
		})
	}
	n := 50000
	if o.Quick {
		n = 2000
	}
	took, err := burst(ctx, s.js, body, n)
	if err != nil {
		return nil, err
	}
	rows = append(rows, Row{
		Scenario: fmt.Sprintf("raw writes in a burst%s (%s async publishes, ≤ 4,000 in flight)", on, count(float64(n))),
		Figure:   fmt.Sprintf("%s/s", count(rate(n, took))), Baseline: "(the stream's write rate, for comparison)", Ratio: 1, Target: "(for comparison)", Met: true,
	})
	return rows, nil
}

// burst publishes n events without waiting for each acknowledgement, as
// fast as the stream takes them, and returns how long until all were
// acknowledged.
func burst(ctx context.Context, js jetstream.JetStream, body []byte, n int) (time.Duration, error) {
	start := time.Now()
	for range n {
		id := domain.NewKeyID()
		m := &nats.Msg{Subject: events.Subject("burst", id, domain.TypeKeyCreated), Data: body}
		msgID := jetstream.WithMsgID(domain.NewEventID())
		_, err := js.PublishMsgAsync(m, msgID)
		for errors.Is(err, jetstream.ErrTooManyStalledMsgs) { // 4,000 in flight: wait for room
			time.Sleep(time.Millisecond)
			_, err = js.PublishMsgAsync(m, msgID)
		}
		if err != nil {
			return 0, err
		}
	}
	select {
	case <-js.PublishAsyncComplete():
	case <-time.After(2 * time.Minute):
		return 0, fmt.Errorf("%d publishes not acknowledged after 2 minutes", n)
	case <-ctx.Done():
		return 0, ctx.Err()
	}
	return time.Since(start), nil
}

// propagation measures a revocation sent over HTTP to instance A → instance
// B, in a process of its own (the keyledger binary, connected to A's
// embedded nats-server over loopback), refusing the key; beside it, a raw
// JetStream publish sent by A → delivered to a subscription of B's.
func propagation(ctx context.Context, o Options, _ *fixture) ([]Row, error) {
	s, err := newStackWith(ctx, filepath.Join(o.Dir, "propagation"), stackConfig{fsync: true, listen: true})
	if err != nil {
		return nil, err
	}
	defer s.stop()
	// Instance B trusts A's key: it checks the signature of every event
	// A appends, as it would in a deployment.
	b, err := startFollower(ctx, o.Follower, followConfig{URL: s.emb.ClientURL(), Seed: s.emb.Credentials.Service, Signers: string(s.store.Signers().PEM())})
	if err != nil {
		return nil, err
	}
	defer b.stop()

	n := 1000
	if o.Quick {
		n = 50
	}
	client := httpClient(1)
	lat, answered := make([]time.Duration, 0, n), make([]time.Duration, 0, n)
	beforeAnswer := 0
	for range n {
		k, err := s.keys.Create(ctx, domain.CreateKey{OrgID: "bench", Name: "doomed", By: benchBy})
		if err != nil {
			return nil, err
		}
		if err := b.send(fmt.Sprintf("watch %d %s", k.Key.Version, k.Secret)); err != nil {
			return nil, err
		}
		if _, err := b.expect("watching", 10*time.Second); err != nil {
			return nil, err
		}
		sent := time.Now()
		if err := s.call(client, "DELETE", "/v1/orgs/bench/keys/"+k.Key.ID, "", nil); err != nil {
			return nil, err
		}
		acked := time.Now()
		refused, err := b.instant("refused", 10*time.Second)
		if err != nil {
			return nil, err
		}
		lat = append(lat, refused.Sub(sent))
		answered = append(answered, acked.Sub(sent))
		if refused.Before(acked) {
			beforeAnswer++
		}
	}
	// Baseline: a raw JetStream publish by A (the same server, the same
	// sync) sent → delivered to B's plain subscription.
	base := make([]time.Duration, 0, n)
	for range n {
		sent := time.Now()
		if _, err := s.js.Publish(ctx, events.Subject("rawprop", domain.NewKeyID(), domain.TypeKeyRevoked), []byte(`{}`)); err != nil {
			return nil, err
		}
		at, err := b.instant("delivered", 10*time.Second)
		if err != nil {
			return nil, err
		}
		base = append(base, at.Sub(sent))
	}
	p99 := percentile(lat, 99)
	return []Row{{
		Scenario: fmt.Sprintf("revocation propagation, DELETE sent to A → B (another process) refuses, %d revocations", n),
		Figure: fmt.Sprintf("p50 %s, p99 %s (A answered: p50 %s, p99 %s; B refused first in %d of %d)",
			dur(percentile(lat, 50)), dur(p99), dur(percentile(answered, 50)), dur(percentile(answered, 99)), beforeAnswer, n),
		Baseline: fmt.Sprintf("raw publish sent → delivered in B: p50 %s, p99 %s", dur(percentile(base, 50)), dur(percentile(base, 99))),
		Ratio:    float64(p99) / float64(max(percentile(base, 99), 1)), Target: "p99 ≤ 1 ms", Met: p99 <= time.Millisecond,
	}}, nil
}
