package bench

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/keyledger/keyledger/domain"
	"github.com/keyledger/keyledger/events"
	"github.com/keyledger/keyledger/verifier"
)

// The edge scenario runs the topology of deploy/ (docs/OPERATORS.md, "An
// edge site through a leaf node") as two nats-servers embedded in the
// bench's process: the hub, in JetStream domain hub, with keyledger on it
// and a leaf node listener on loopback; and the edge, in domain edge, a
// leaf node of the hub with a mirror of KEYLEDGER made as
// deploy/edge-mirror.json makes it. The configurations are those of
// deploy/hub-leafnodes.conf and deploy/edge-leaf.conf with loopback
// ports, the scenario's directory and passwords, and one grant more for
// the leaf user: the link round-trip baseline's subjects. Both sync every
// write, as deploy/ does.

// edgeLinkSubject is where the hub asks the edge for the round trip; the
// edge answers on the hub's inbox under edgeLinkInbox.
const (
	edgeLinkSubject = "keyledger.bench.link"
	edgeLinkInbox   = "keyledger.bench.link.reply"
)

const edgeHubConf = `
server_name: hub
listen: "127.0.0.1:-1"
jetstream {
  store_dir: %q
  sync_interval: always
  domain: hub
}
leafnodes {
  listen: "127.0.0.1:-1"
  no_advertise: true
}
accounts {
  KEYLEDGER: {
    jetstream: enabled
    users: [
      {user: keyledger, password: %q}
      {
        user: edge
        password: %q
        permissions: {
          publish: {allow: ["$JS.hub.API.CONSUMER.CREATE.KEYLEDGER", "$JS.FC.>", "` + edgeLinkInbox + `.>"]}
          subscribe: {allow: ["$JSC.R.>", "$JS.M.>", "` + edgeLinkSubject + `"]}
        }
      }
    ]
  }
}
`

const edgeLeafConf = `
server_name: edge-1
listen: "127.0.0.1:-1"
jetstream {
  store_dir: %q
  sync_interval: always
  domain: edge
}
leafnodes {
  remotes: [{url: %q, account: KEYLEDGER}]
}
accounts {
  KEYLEDGER: {
    jetstream: enabled
    users: [
      {user: admin, password: %q}
      {
        user: verifier
        password: %q
        permissions: {
          publish: {allow: [
            "$JS.API.STREAM.INFO.KEYLEDGER", "$JS.API.STREAM.MSG.GET.KEYLEDGER",
            "$JS.API.DIRECT.GET.KEYLEDGER", "$JS.API.DIRECT.GET.KEYLEDGER.>",
            "$JS.API.CONSUMER.CREATE.KEYLEDGER", "$JS.API.CONSUMER.CREATE.KEYLEDGER.>",
            "$JS.API.CONSUMER.INFO.KEYLEDGER.>", "$JS.API.CONSUMER.MSG.NEXT.KEYLEDGER.>", "$JS.FC.KEYLEDGER.>",
            "$JS.API.STREAM.INFO.OBJ_KEYLEDGER_SNAPSHOTS",
            "$JS.API.DIRECT.GET.OBJ_KEYLEDGER_SNAPSHOTS", "$JS.API.DIRECT.GET.OBJ_KEYLEDGER_SNAPSHOTS.>"
          ]}
          subscribe: {allow: ["_INBOX_keyledger_subscriber.>"]}
        }
      }
    ]
  }
}
`

// edgeMirror is deploy/edge-mirror.json.
var edgeMirror = jetstream.StreamConfig{
	Name:        events.StreamName,
	Description: "keyledger: a mirror of the main site's KEYLEDGER, for the verifiers of this edge site",
	Mirror: &jetstream.StreamSource{Name: events.StreamName,
		External: &jetstream.ExternalStream{APIPrefix: "$JS.hub.API"}},
	Storage: jetstream.FileStorage, Retention: jetstream.LimitsPolicy, Replicas: 1,
	DenyDelete: true, DenyPurge: true, AllowDirect: true,
}

// startConfigured starts a nats-server in this process from conf.
func startConfigured(conf string) (*server.Server, *server.Options, error) {
	opts := &server.Options{}
	if err := opts.ProcessConfigString(conf); err != nil {
		return nil, nil, err
	}
	opts.NoSigs = true
	ns, err := server.NewServer(opts)
	if err != nil {
		return nil, nil, err
	}
	go ns.Start()
	if !ns.ReadyForConnections(30 * time.Second) {
		ns.Shutdown()
		return nil, nil, fmt.Errorf("nats-server %s did not become ready within 30s", opts.ServerName)
	}
	return ns, opts, nil
}

func stopServer(ns *server.Server) {
	ns.Shutdown()
	ns.WaitForShutdown()
}

func password() string {
	b := make([]byte, 12)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// edgeSites is the running topology, with a connection for each role.
type edgeSites struct {
	hub, edge *server.Server
	stack     *stack     // keyledger at the hub, on its own in-process connection
	link      *nats.Conn // at the hub, asking over the link (in-process)
	admin     *nats.Conn // at the edge, as admin: the mirror, the answers, the raw consumer (TCP)
	verifier  *nats.Conn // at the edge, as verifier (TCP)
	conns     []*nats.Conn
}

func (e *edgeSites) stop() {
	if e.stack != nil {
		e.stack.stop()
	}
	for _, nc := range e.conns {
		nc.Close()
	}
	if e.edge != nil {
		stopServer(e.edge)
	}
	if e.hub != nil {
		stopServer(e.hub)
	}
}

func startEdgeSites(ctx context.Context, dir string) (_ *edgeSites, err error) {
	e := &edgeSites{}
	defer func() {
		if err != nil {
			e.stop()
		}
	}()
	klPW, edgePW, adminPW, verifierPW := password(), password(), password(), password()
	hub, hubOpts, err := startConfigured(fmt.Sprintf(edgeHubConf, filepath.Join(dir, "hub"), klPW, edgePW))
	if err != nil {
		return nil, fmt.Errorf("hub: %w", err)
	}
	e.hub = hub
	if hubOpts.LeafNode.Port <= 0 {
		return nil, errors.New("hub: no leaf node port")
	}
	leafURL := fmt.Sprintf("nats-leaf://edge:%s@127.0.0.1:%d", edgePW, hubOpts.LeafNode.Port)
	edge, _, err := startConfigured(fmt.Sprintf(edgeLeafConf, filepath.Join(dir, "edge"), leafURL, adminPW, verifierPW))
	if err != nil {
		return nil, fmt.Errorf("edge: %w", err)
	}
	e.edge = edge
	connect := func(url string, opts ...nats.Option) (*nats.Conn, error) {
		nc, err := nats.Connect(url, append(opts, nats.ErrorHandler(func(*nats.Conn, *nats.Subscription, error) {}))...)
		if err == nil {
			e.conns = append(e.conns, nc)
		}
		return nc, err
	}
	kl, err := connect("", nats.InProcessServer(hub), nats.UserInfo("keyledger", klPW))
	if err != nil {
		return nil, err
	}
	if e.link, err = connect("", nats.InProcessServer(hub), nats.UserInfo("keyledger", klPW), nats.CustomInboxPrefix(edgeLinkInbox)); err != nil {
		return nil, err
	}
	if e.admin, err = connect(edge.ClientURL(), nats.UserInfo("admin", adminPW)); err != nil {
		return nil, err
	}
	if e.verifier, err = connect(edge.ClientURL(), nats.UserInfo("verifier", verifierPW), nats.CustomInboxPrefix(verifier.SubscriberInbox)); err != nil {
		return nil, err
	}
	if e.stack, err = newStackOn(ctx, kl, filepath.Join(dir, "keyledger"), false, 1); err != nil {
		return nil, err
	}
	ejs, _ := jetstream.New(e.admin)
	if _, err := ejs.CreateStream(ctx, edgeMirror); err != nil {
		return nil, fmt.Errorf("the mirror at the edge: %w", err)
	}
	// The edge answers the link's round trip.
	if _, err := e.admin.Subscribe(edgeLinkSubject, func(m *nats.Msg) { _ = m.Respond(nil) }); err != nil {
		return nil, err
	}
	if err := e.admin.Flush(); err != nil {
		return nil, err
	}
	// Up once a request crosses the link both ways.
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, err := e.link.Request(edgeLinkSubject, nil, time.Second); err == nil {
			return e, nil
		} else if time.Now().After(deadline) {
			return nil, fmt.Errorf("no answer across the leaf node link within 30s: %w", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// edgePropagation measures a revocation sent over HTTP to keyledger at
// the hub → a verifier (the verifier package) following the edge's
// mirror refusing the key, beside the link's round trip (a core NATS
// request from the hub answered at the edge, across the leaf node
// connection), measured between the revocations, and a raw JetStream
// publish at the hub → delivered to a consumer of the edge's mirror.
func edgePropagation(ctx context.Context, o Options, _ *fixture) ([]Row, error) {
	e, err := startEdgeSites(ctx, filepath.Join(o.Dir, "edge"))
	if err != nil {
		return nil, err
	}
	defer e.stop()
	s := e.stack

	// The edge's verifier refuses the watched key: reported by its
	// OnRevoked, which runs once its index has applied the revocation,
	// checked with a verification as a service asking it would.
	var (
		watched atomic.Pointer[string]
		v       atomic.Pointer[verifier.Verifier]
		refused = make(chan time.Time, 1)
	)
	vjs, _ := jetstream.New(e.verifier)
	ver, err := verifier.New(ctx, vjs, verifier.Options{Signers: s.store.Signers(), Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
		OnRevoked: func(verifier.Event) {
			secret := watched.Load()
			if secret == nil || v.Load().Verify(*secret).Code != domain.VerifyRevoked {
				return
			}
			at := time.Now()
			watched.Store(nil)
			refused <- at
		}})
	if err != nil {
		return nil, err
	}
	v.Store(ver)
	defer ver.Close()
	if err := ver.WaitReady(ctx); err != nil {
		return nil, err
	}

	n := 1000
	if o.Quick {
		n = 50
	}
	client := httpClient(1)
	defer client.CloseIdleConnections()
	lat, answered, trip := make([]time.Duration, 0, n), make([]time.Duration, 0, n), make([]time.Duration, 0, n)
	after := make([]time.Duration, 0, n) // from the hub's answer to the edge's refusal: the way across, 0 when the edge was first
	edgeFirst := 0
	for range n {
		sent := time.Now()
		if _, err := e.link.Request(edgeLinkSubject, nil, 5*time.Second); err != nil {
			return nil, fmt.Errorf("the link's round trip: %w", err)
		}
		trip = append(trip, time.Since(sent))

		k, err := s.keys.Create(ctx, domain.CreateKey{OrgID: "bench", Name: "doomed", By: benchBy})
		if err != nil {
			return nil, err
		}
		wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		err = ver.WaitFor(wctx, k.Key.Version)
		cancel()
		if err != nil {
			return nil, fmt.Errorf("the edge's verifier did not apply the creation at %d: %w", k.Key.Version, err)
		}
		if res := ver.Verify(k.Secret); !res.Valid() {
			return nil, fmt.Errorf("the key created at %d verifies %s at the edge", k.Key.Version, res.Code)
		}
		watched.Store(&k.Secret)
		sent = time.Now()
		if err := s.call(client, "DELETE", "/v1/orgs/bench/keys/"+k.Key.ID, "", nil); err != nil {
			return nil, err
		}
		acked := time.Now()
		select {
		case at := <-refused:
			lat = append(lat, at.Sub(sent))
			after = append(after, max(at.Sub(acked), 0))
			if at.Before(acked) {
				edgeFirst++
			}
		case <-time.After(10 * time.Second):
			return nil, errors.New("the edge's verifier did not refuse a revoked key within 10s")
		}
		answered = append(answered, acked.Sub(sent))
	}
	ver.Close() // it would take the raw messages as events, and refuse them

	raw, err := edgeRawPublish(ctx, e, n)
	if err != nil {
		return nil, err
	}
	p99, tripP99 := percentile(lat, 99), percentile(trip, 99)
	bound := tripP99 + time.Millisecond
	return []Row{{
		Scenario: fmt.Sprintf("edge verifier (leaf node, mirror; hub and edge nats-servers embedded in this process), DELETE sent at the hub → verifier at the edge refuses, %d revocations", n),
		Figure: fmt.Sprintf("p50 %s, p99 %s (hub answered: p50 %s, p99 %s; edge refused after the answer: p50 %s, p99 %s, first in %d of %d)",
			dur(percentile(lat, 50)), dur(p99), dur(percentile(answered, 50)), dur(percentile(answered, 99)),
			dur(percentile(after, 50)), dur(percentile(after, 99)), edgeFirst, n),
		Baseline: fmt.Sprintf("link round trip (core request hub → edge → hub): p50 %s, p99 %s; raw publish at the hub → consumer of the edge's mirror: p50 %s, p99 %s",
			dur(percentile(trip, 50)), dur(tripP99), dur(percentile(raw, 50)), dur(percentile(raw, 99))),
		Ratio:  float64(p99) / float64(bound),
		Target: fmt.Sprintf("p99 ≤ link round trip p99 + 1 ms (%s)", dur(bound)),
		Met:    p99 <= bound,
	}}, nil
}

// edgeRawPublish times n raw JetStream publishes at the hub (into
// KEYLEDGER, of an org no key is in) from sent to delivered to an ordered
// consumer of the edge's mirror.
func edgeRawPublish(ctx context.Context, e *edgeSites, n int) ([]time.Duration, error) {
	ejs, _ := jetstream.New(e.admin)
	c, err := ejs.OrderedConsumer(ctx, events.StreamName, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{"keyledger.events.rawedge.>"}, DeliverPolicy: jetstream.DeliverNewPolicy})
	if err != nil {
		return nil, err
	}
	delivered := make(chan time.Time, 1)
	cc, err := c.Consume(func(m jetstream.Msg) { delivered <- time.Now() })
	if err != nil {
		return nil, err
	}
	defer cc.Stop()
	out := make([]time.Duration, 0, n)
	for range n {
		sent := time.Now()
		if _, err := e.stack.js.Publish(ctx, events.Subject("rawedge", domain.NewKeyID(), domain.TypeKeyRevoked), []byte(`{}`)); err != nil {
			return nil, err
		}
		select {
		case at := <-delivered:
			out = append(out, at.Sub(sent))
		case <-time.After(10 * time.Second):
			return nil, errors.New("a raw publish at the hub did not reach the edge's mirror within 10s")
		}
	}
	return out, nil
}
