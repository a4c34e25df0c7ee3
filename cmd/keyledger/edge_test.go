package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/keyledger/keyledger/events"
	"github.com/keyledger/keyledger/verifier"
)

// linkProxy is the link between the sites: a TCP proxy on loopback that
// the test cuts (closing its listener and every connection through it,
// so the leaf node's reconnections are refused) and mends.
type linkProxy struct {
	addr, to string
	mu       sync.Mutex
	ln       net.Listener
	conns    []net.Conn
}

func newLinkProxy(t *testing.T, to string) *linkProxy {
	t.Helper()
	p := &linkProxy{addr: freeAddr(t), to: to}
	p.mend(t)
	t.Cleanup(p.cut)
	return p
}

func (p *linkProxy) mend(t *testing.T) {
	t.Helper()
	ln, err := net.Listen("tcp", p.addr)
	if err != nil {
		t.Fatal(err)
	}
	p.mu.Lock()
	p.ln = ln
	p.mu.Unlock()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			up, err := net.Dial("tcp", p.to)
			if err != nil {
				c.Close()
				continue
			}
			p.mu.Lock()
			p.conns = append(p.conns, c, up)
			p.mu.Unlock()
			go func() { _, _ = io.Copy(up, c); up.Close() }()
			go func() { _, _ = io.Copy(c, up); c.Close() }()
		}
	}()
}

func (p *linkProxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ln != nil {
		p.ln.Close()
		p.ln = nil
	}
	for _, c := range p.conns {
		c.Close()
	}
	p.conns = nil
}

// edgeSites is the topology of deploy/: a main site (a nats-server in
// JetStream domain hub, keyledger serving on it) and an edge site (a
// nats-server in domain edge, a leaf node of the hub through link, with
// a mirror of KEYLEDGER made from deploy/edge-mirror.json).
type edgeSites struct {
	kl      *process
	admin   string // a management key of org acme
	signers *verifier.Signers
	link    *linkProxy
	hub     jetstream.JetStream // the hub, as keyledger's user
	edge    jetstream.JetStream // the edge's admin user
	edgeURL string              // the edge's client port, as its verifier user
	hubAddr string
}

// deployConf writes deploy/name with each of repl's old strings, which
// must all be there, replaced by the new one.
func deployConf(t *testing.T, name, to string, repl ...string) {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join("..", "..", "deploy", name))
	if err != nil {
		t.Fatal(err)
	}
	s := string(raw)
	for i := 0; i < len(repl); i += 2 {
		if !strings.Contains(s, repl[i]) {
			t.Fatalf("deploy/%s no longer holds %q", name, repl[i])
		}
		s = strings.ReplaceAll(s, repl[i], repl[i+1])
	}
	if err := os.WriteFile(to, []byte(s), 0o600); err != nil {
		t.Fatal(err)
	}
}

func startEdgeSites(t *testing.T) *edgeSites {
	t.Helper()
	if testing.Short() {
		t.Skip("an edge test runs three nats-servers' worth of processes: not in -short")
	}
	began := time.Now()
	dir := t.TempDir()
	bin := filepath.Join(dir, "nats-server")
	if out, err := exec.Command("go", "build", "-o", bin, "github.com/nats-io/nats-server/v2").CombinedOutput(); err != nil {
		t.Fatalf("build nats-server: %v\n%s", err, out)
	}
	hubAddr, hubLeaf, edgeAddr := freeAddr(t), freeAddr(t), freeAddr(t)
	hub := &natsNode{name: "hub", conf: filepath.Join(dir, "hub.conf"), url: "nats://" + hubAddr}
	deployConf(t, "hub-leafnodes.conf", hub.conf,
		"0.0.0.0:4222", hubAddr, "0.0.0.0:7422", hubLeaf, "/data", filepath.Join(dir, "hub"),
		"$2a$11$REPLACE.WITH.A.BCRYPT.HASH.FROM.nats.server.passwd", "kl-pw",
		"$2a$11$REPLACE.WITH.ANOTHER.BCRYPT.HASH.FOR.THE.EDGE", "edge-pw")
	t.Logf("nats-server built in %s", time.Since(began).Round(time.Millisecond))
	hub.start(t, bin)
	t.Cleanup(hub.kill)
	link := newLinkProxy(t, hubLeaf)
	edge := &natsNode{name: "edge", conf: filepath.Join(dir, "edge.conf"), url: "nats://" + edgeAddr}
	deployConf(t, "edge-leaf.conf", edge.conf,
		"0.0.0.0:4222", edgeAddr, "/data", filepath.Join(dir, "edge"),
		"REPLACE-WITH-THE-EDGE-PASSWORD@hub.example:7422", "edge-pw@"+link.addr,
		"$2a$11$REPLACE.WITH.A.BCRYPT.HASH.FROM.nats.server.passwd", "admin-pw",
		"$2a$11$REPLACE.WITH.ANOTHER.BCRYPT.HASH.FOR.VERIFIERS", "verifier-pw")
	edge.start(t, bin)
	t.Cleanup(edge.kill)

	// keyledger at the main site.
	pub, stderr, err := runBinary(t, dir, nil, "keygen", filepath.Join(dir, "signing.pem"))
	if err != nil {
		t.Fatalf("keygen: %v %s", err, stderr)
	}
	signers, err := verifier.ParseSigners([]byte(pub))
	if err != nil {
		t.Fatal(err)
	}
	env := []string{"KEYLEDGER_NATS_URL=nats://keyledger:kl-pw@" + hubAddr, "KEYLEDGER_SIGNING_KEY=" + filepath.Join(dir, "signing.pem")}
	hubNC, err := nats.Connect("nats://keyledger:kl-pw@"+hubAddr, nats.RetryOnFailedConnect(true), nats.MaxReconnects(-1))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(hubNC.Close)
	hubJS, _ := jetstream.New(hubNC)
	waitFor(t, 30*time.Second, "the hub's JetStream", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_, err := hubJS.AccountInfo(ctx)
		return err == nil
	})
	admin, stderr, err := runBinary(t, dir, env, "bootstrap", "--org", "acme", "--name", "admin")
	if err != nil {
		t.Fatalf("bootstrap: %v %s", err, stderr)
	}
	addr := freeAddr(t)
	kl := serveProcess(t, dir, addr, append([]string{"KEYLEDGER_HTTP_ADDR=" + addr}, env...))

	// The mirror at the edge, as deploy/edge-mirror.json makes it.
	nc, err := nats.Connect("nats://admin:admin-pw@"+edgeAddr, nats.RetryOnFailedConnect(true), nats.MaxReconnects(-1))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, _ := jetstream.New(nc)
	raw, err := os.ReadFile(filepath.Join("..", "..", "deploy", "edge-mirror.json"))
	if err != nil {
		t.Fatal(err)
	}
	var cfg jetstream.StreamConfig
	if err := json.Unmarshal(raw, &cfg); err != nil {
		t.Fatalf("deploy/edge-mirror.json: %v", err)
	}
	waitFor(t, 30*time.Second, "the mirror at the edge to be made", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_, err := js.CreateStream(ctx, cfg)
		return err == nil
	})
	t.Logf("both sites up in %s", time.Since(began).Round(time.Millisecond))
	return &edgeSites{kl: kl, admin: strings.TrimSpace(admin), signers: signers, link: link, hub: hubJS, edge: js,
		edgeURL: "nats://verifier:verifier-pw@" + edgeAddr, hubAddr: hubAddr}
}

// waitFor polls cond until it holds, failing the test after d.
func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// call sends a request to keyledger at the main site as the org's admin,
// and returns the answer's status, body and X-Keyledger-Seq.
func (s *edgeSites) call(t *testing.T, method, path, body string) (int, []byte, uint64) {
	t.Helper()
	req, _ := http.NewRequest(method, s.kl.url+path, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+s.admin)
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	var buf bytes.Buffer
	_, _ = buf.ReadFrom(res.Body)
	seq, _ := strconv.ParseUint(res.Header.Get("X-Keyledger-Seq"), 10, 64)
	return res.StatusCode, buf.Bytes(), seq
}

// create makes a key at the main site; returns its id, secret and sequence.
func (s *edgeSites) create(t *testing.T, name string) (string, string, uint64) {
	t.Helper()
	status, body, seq := s.call(t, "POST", "/v1/orgs/acme/keys", `{"name":"`+name+`"}`)
	if status != http.StatusCreated {
		t.Fatalf("create: %d %s", status, body)
	}
	var out struct {
		Key    struct{ ID string }
		Secret string
	}
	if err := json.Unmarshal(body, &out); err != nil {
		t.Fatal(err)
	}
	return out.Key.ID, out.Secret, seq
}

func (s *edgeSites) revoke(t *testing.T, id string) uint64 {
	t.Helper()
	status, body, seq := s.call(t, "DELETE", "/v1/orgs/acme/keys/"+id, "")
	if status != http.StatusNoContent {
		t.Fatalf("revoke: %d %s", status, body)
	}
	return seq
}

// verifierAtEdge starts a verifier on the edge's mirror, as the edge's
// read-only verifier user.
func (s *edgeSites) verifierAtEdge(t *testing.T, opts verifier.Options) *verifier.Verifier {
	t.Helper()
	nc, err := nats.Connect(s.edgeURL, nats.CustomInboxPrefix(verifier.SubscriberInbox), nats.MaxReconnects(-1))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, _ := jetstream.New(nc)
	if opts.Signers == nil {
		opts.Signers = s.signers
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	began := time.Now()
	v, err := verifier.New(ctx, js, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(v.Close)
	if err := v.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	// A look-up the verifier user may not make goes unanswered, and
	// costs a start the client's 5 s timeout (the snapshot bucket's, once).
	if took := time.Since(began); took > 4*time.Second {
		t.Errorf("the verifier at the edge took %s to be ready over a handful of events: does the verifier user lack a grant?", took.Round(time.Millisecond))
	}
	return v
}

func waitApplied(t *testing.T, v *verifier.Verifier, seq uint64) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := v.WaitFor(ctx, seq); err != nil {
		t.Fatalf("the edge's verifier did not apply seq %d: %v", seq, err)
	}
}

// TestEdgeVerifierRefusesAKeyRevokedAtTheMainSite: a revocation made at
// the main site reaches a verifier at the edge through the leaf node and
// the mirror, under the same stream sequence, and the verifier refuses
// the key; the mirror keeps the events' signatures, so a verifier that
// trusts other signers applies none of them.
func TestEdgeVerifierRefusesAKeyRevokedAtTheMainSite(t *testing.T) {
	s := startEdgeSites(t)
	id, secret, created := s.create(t, "edge")
	revoked := make(chan verifier.Event, 1)
	v := s.verifierAtEdge(t, verifier.Options{OnRevoked: func(e verifier.Event) { revoked <- e }})
	waitApplied(t, v, created)
	if got, want := v.Verify(secret).Code, "VALID"; got != want {
		t.Fatalf("at the edge before the revocation: %s, want %s", got, want)
	}
	seq := s.revoke(t, id)
	start := time.Now()
	waitApplied(t, v, seq)
	t.Logf("revocation at seq %d applied at the edge %s after its acknowledgement", seq, time.Since(start))
	if got, want := v.Verify(secret).Code, "REVOKED"; got != want {
		t.Fatalf("at the edge after the revocation: %s, want %s", got, want)
	}
	select {
	case e := <-revoked:
		if e.KeyID != id || e.Seq != seq {
			t.Errorf("OnRevoked got %s at seq %d, want %s at %d", e.KeyID, e.Seq, id, seq)
		}
	case <-time.After(5 * time.Second):
		t.Error("OnRevoked was not called at the edge")
	}

	// A verifier that trusts another key applies nothing from the mirror:
	// the signatures came across with the events, and are checked.
	other, err := os.CreateTemp(t.TempDir(), "other")
	if err != nil {
		t.Fatal(err)
	}
	other.Close()
	os.Remove(other.Name())
	pub, stderr, err := runBinary(t, t.TempDir(), nil, "keygen", other.Name())
	if err != nil {
		t.Fatalf("keygen: %v %s", err, stderr)
	}
	stranger, err := verifier.ParseSigners([]byte(pub))
	if err != nil {
		t.Fatal(err)
	}
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil)) // it logs every refusal at error level
	w := s.verifierAtEdge(t, verifier.Options{Signers: stranger, Logger: quiet})
	waitApplied(t, w, seq)
	if got, want := w.Verify(secret).Code, "NOT_FOUND"; got != want {
		t.Errorf("a verifier trusting another signer at the edge: %s, want %s (the events' signatures did not count)", got, want)
	}
}

// TestEdgeMirrorTakesTheEventsAsPublished: keyledger appends with
// Nats-Msg-Id, Nats-Expected-Stream and Nats-Expected-Last-Subject-Sequence;
// mirrors were once refused such messages. The edge's mirror (and a second
// mirror under another name, which Nats-Expected-Stream: KEYLEDGER would
// not match) holds every message the hub holds, under the same sequences,
// with the signature headers; nats-server drops the Nats-Expected-
// headers on the way in, and nothing else.
func TestEdgeMirrorTakesTheEventsAsPublished(t *testing.T) {
	s := startEdgeSites(t)
	id, _, _ := s.create(t, "first")
	s.call(t, "POST", "/v1/orgs/acme/keys/"+id+"/rotate", "") // appended with an expected sequence
	last := s.revoke(t, id)

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	copyCfg := jetstream.StreamConfig{Name: "KEYLEDGER_COPY", Storage: jetstream.FileStorage,
		Mirror: &jetstream.StreamSource{Name: events.StreamName, External: &jetstream.ExternalStream{APIPrefix: "$JS.hub.API"}}}
	if _, err := s.edge.CreateStream(ctx, copyCfg); err != nil {
		t.Fatal(err)
	}
	hubStream, err := s.hub.Stream(ctx, events.StreamName)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{events.StreamName, "KEYLEDGER_COPY"} {
		stream, err := s.edge.Stream(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		waitFor(t, 60*time.Second, name+" at the edge to hold seq "+strconv.FormatUint(last, 10), func() bool {
			info, err := stream.Info(ctx)
			return err == nil && info.State.LastSeq >= last
		})
		info, _ := stream.Info(ctx)
		if info.Mirror == nil || info.Mirror.Error != nil {
			t.Fatalf("%s: mirror state %+v", name, info.Mirror)
		}
		for seq := uint64(1); seq <= last; seq++ {
			m, err := stream.GetMsg(ctx, seq)
			if err != nil {
				t.Fatalf("%s seq %d: %v", name, seq, err)
			}
			if !strings.HasPrefix(m.Subject, events.SubjectRoot+".") {
				continue // a checkpoint
			}
			for _, h := range []string{"Keyledger-Signer", "Keyledger-Signature", "Nats-Msg-Id"} {
				if m.Header.Get(h) == "" {
					t.Errorf("%s seq %d (%s) lost its %s header in the mirror: %v", name, seq, m.Subject, h, m.Header)
				}
			}
			for h := range m.Header {
				if strings.HasPrefix(h, "Nats-Expected-") {
					t.Errorf("%s seq %d kept %s: a mirror would check it against itself", name, seq, h)
				}
			}
			if seq == last {
				t.Logf("%s seq %d at the edge: headers %v", name, seq, m.Header)
				hm, err := hubStream.GetMsg(ctx, seq)
				if err != nil {
					t.Fatal(err)
				}
				t.Logf("the same at the hub: headers %v", hm.Header)
				if !bytes.Equal(hm.Data, m.Data) || hm.Subject != m.Subject {
					t.Errorf("seq %d differs between the hub and the edge's %s", seq, name)
				}
			}
		}
	}
}

// TestEdgeLeafUserMayOnlyMakeTheMirror: the hub's user for leaf nodes,
// whoever holds its password, may publish no event, read none, and call
// no API but the mirror's consumer creation (and as a plain client not
// even that: the hub maps $JS.hub.API to $JS.API for a client before it
// checks, so only a leaf node's request passes). Without that one grant
// the mirror copies nothing, as tried by hand.
func TestEdgeLeafUserMayOnlyMakeTheMirror(t *testing.T) {
	s := startEdgeSites(t)
	denied := make(chan string, 16)
	nc, err := nats.Connect("nats://edge:edge-pw@"+s.hubAddr, nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
		if errors.Is(err, nats.ErrPermissionViolation) {
			denied <- err.Error()
		}
	}))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	for _, subject := range []string{
		"keyledger.events.acme.key_01M8ZC4S1G49EC0DY4T8HF0EB8.revoked",
		"keyledger.checkpoints",
		"$JS.hub.API.STREAM.INFO.KEYLEDGER",
		"$JS.hub.API.STREAM.DELETE.KEYLEDGER",
		"$JS.hub.API.CONSUMER.CREATE.KEYLEDGER.keyledger-webhooks.>",
		"$JS.API.STREAM.INFO.KEYLEDGER",
	} {
		if err := nc.Publish(subject, []byte("{}")); err != nil {
			t.Fatal(err)
		}
		_ = nc.Flush()
		select {
		case why := <-denied:
			// A client's $JS.hub.API is mapped to $JS.API before the check.
			if !strings.Contains(why, subject) && !strings.Contains(why, strings.Replace(subject, "$JS.hub.API.", "$JS.API.", 1)) {
				t.Errorf("publish to %s: refused with %q", subject, why)
			}
		case <-time.After(5 * time.Second):
			t.Errorf("the leaf user may publish to %s", subject)
		}
	}
	if _, err := nc.SubscribeSync("keyledger.events.>"); err != nil {
		t.Fatal(err)
	}
	_ = nc.Flush()
	select {
	case <-denied:
	case <-time.After(5 * time.Second):
		t.Error("the leaf user may subscribe to keyledger.events.>")
	}
}

// TestEdgeAnswersThroughACutLinkAndCatchesUp: with the link to the main
// site cut, the edge's verifiers keep answering from the mirror and say
// how stale they are; one with MaxStaleness fails closed once past it.
// When the link returns, the mirror catches up, and a key revoked at the
// main site during the cut is refused at the edge.
func TestEdgeAnswersThroughACutLinkAndCatchesUp(t *testing.T) {
	s := startEdgeSites(t)
	_, kept, _ := s.create(t, "kept")
	doomedID, doomed, seq := s.create(t, "doomed")
	const maxStaleness = 5 * time.Second
	open := s.verifierAtEdge(t, verifier.Options{})
	strict := s.verifierAtEdge(t, verifier.Options{MaxStaleness: maxStaleness})
	waitApplied(t, open, seq)
	waitApplied(t, strict, seq)
	waitFor(t, 60*time.Second, "the strict verifier to vouch for its answers", func() bool {
		return strict.Verify(kept).Code == "VALID"
	})
	if st := strict.Staleness(); st > maxStaleness {
		t.Fatalf("staleness %s with the link up", st)
	}

	s.link.cut()
	cutAt := time.Now()
	revokedSeq := s.revoke(t, doomedID) // at the main site, while the edge cannot hear of it
	waitFor(t, 60*time.Second, "the strict verifier to fail closed", func() bool {
		return strict.Verify(kept).Code == verifier.Unavailable
	})
	t.Logf("the strict verifier failed closed %s after the cut (MaxStaleness %s), staleness %s",
		time.Since(cutAt).Round(time.Millisecond), maxStaleness, strict.Staleness().Round(time.Millisecond))
	// The mirror last heard from the hub up to a heartbeat (1 s) before
	// the cut, and the verifier asks a few times per MaxStaleness.
	if since := time.Since(cutAt); since < maxStaleness-2*time.Second {
		t.Errorf("failed closed %s after the cut, well before MaxStaleness (%s) had passed", since, maxStaleness)
	}
	for name, secret := range map[string]string{"kept": kept, "doomed": doomed} {
		if got, want := open.Verify(secret).Code, "VALID"; got != want {
			t.Errorf("the open verifier during the cut, %s: %s, want %s (from its copy: the revocation has not come)", name, got, want)
		}
	}
	if st := open.Staleness(); st < maxStaleness {
		t.Errorf("the open verifier says it is %s stale, %s into the cut", st, time.Since(cutAt).Round(time.Millisecond))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if info, err := s.edge.Stream(ctx, events.StreamName); err != nil || info.CachedInfo().State.LastSeq >= revokedSeq {
		t.Fatalf("the mirror holds the revocation made during the cut: %v", err)
	}

	s.link.mend(t)
	mendedAt := time.Now()
	waitApplied(t, open, revokedSeq)
	t.Logf("the edge had the revocation made during the cut %s after the link returned", time.Since(mendedAt).Round(time.Millisecond))
	if got, want := open.Verify(doomed).Code, "REVOKED"; got != want {
		t.Errorf("after the link returned: %s, want %s", got, want)
	}
	waitFor(t, 60*time.Second, "the strict verifier to answer again", func() bool {
		return strict.Verify(kept).Code == "VALID"
	})
	if got, want := strict.Verify(doomed).Code, "REVOKED"; got != want {
		t.Errorf("the strict verifier after the link returned: %s, want %s", got, want)
	}
	t.Logf("the strict verifier answered again %s after the link returned, staleness %s",
		time.Since(mendedAt).Round(time.Millisecond), strict.Staleness().Round(time.Millisecond))
}
