package natsembed_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/keyledger/keyledger/domain"
	"github.com/keyledger/keyledger/events"
	"github.com/keyledger/keyledger/events/natsembed"
	"github.com/keyledger/keyledger/internal/natstest"
	"github.com/keyledger/keyledger/verifier"
)

// red5Env is an embedded server with a client port, the service's store on
// it, and a way to connect as the read-only subscriber.
type red5Env struct {
	emb     *natsembed.Server
	svcJS   jetstream.JetStream
	store   *events.Store
	keys    *domain.Keys
	signers *events.Signers
}

func startRed5(t *testing.T) *red5Env {
	t.Helper()
	emb, err := natsembed.Start(natsembed.Config{Dir: t.TempDir(), Listen: "127.0.0.1:0", Logger: natstest.Quiet()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(emb.Close)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	svcJS, _ := jetstream.New(emb.Conn)
	signer := newSigner(t)
	store, err := events.Open(ctx, svcJS, events.Config{Logger: natstest.Quiet(), Signer: signer})
	if err != nil {
		t.Fatal(err)
	}
	return &red5Env{emb: emb, svcJS: svcJS, store: store, keys: &domain.Keys{Store: store}, signers: events.NewSigners(signer.Public())}
}

// reader connects as the subscriber, as a verifier does.
func (e *red5Env) reader(t *testing.T) *nats.Conn {
	t.Helper()
	nk, err := nats.NkeyOptionFromSeed(e.emb.Credentials.Subscriber)
	if err != nil {
		t.Fatal(err)
	}
	nc, err := nats.Connect(e.emb.ClientURL(), nk, nats.MaxReconnects(0), nats.CustomInboxPrefix(events.SubscriberInbox),
		nats.ErrorHandler(func(*nats.Conn, *nats.Subscription, error) {}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc
}

func (e *red5Env) verifier(t *testing.T) *verifier.Verifier {
	t.Helper()
	js, _ := jetstream.New(e.reader(t))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	v, err := verifier.New(ctx, js, verifier.Options{Signers: e.signers, Logger: natstest.Quiet(), FullReplay: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(v.Close)
	if err := v.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	return v
}

func (e *red5Env) create(t *testing.T, name string) domain.Issued {
	t.Helper()
	k, err := e.keys.Create(context.Background(), domain.CreateKey{OrgID: "acme", Name: name, By: asSystem})
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// TestAttackRed5ReaderRetargetsAnotherVerifiersConsumer: every verifier
// and auditor shares the subscriber credential, its account and its inbox
// prefix, and may subscribe to _INBOX_keyledger_subscriber.>: one of them
// sees the others' deliveries, and in their ack subjects the name of the
// ordered consumer each follows KEYLEDGER with. CONSUMER.CREATE.KEYLEDGER.>
// is granted (and imported) for any name, and a create of an existing
// consumer with an other filter is an update: the attacker narrows the
// victim's consumer to key creations, and the victim's feed skips the
// revocation that follows, for good (the next creation it is handed has a
// higher sequence, so it is current again).
func TestAttackRed5ReaderRetargetsAnotherVerifiersConsumer(t *testing.T) {
	for _, c := range []struct {
		name   string
		change func(map[string]any)
	}{
		{"filter", func(c map[string]any) { c["filter_subject"] = events.SubjectRoot + ".*.*.created" }},
		{"headers_only", func(c map[string]any) { c["headers_only"] = true }},
	} {
		t.Run(c.name, func(t *testing.T) { retargetVictim(t, c.change) })
	}
}

func retargetVictim(t *testing.T, change func(map[string]any)) {
	e := startRed5(t)
	victimKey := e.create(t, "victim")
	v := e.verifier(t)

	attacker := e.reader(t)
	var mu sync.Mutex
	names := map[string]bool{}
	if _, err := attacker.Subscribe(events.SubscriberInbox+".>", func(m *nats.Msg) {
		if strings.HasPrefix(m.Reply, "$JS.ACK."+events.StreamName+".") {
			mu.Lock()
			names[strings.Split(m.Reply, ".")[3]] = true
			mu.Unlock()
		}
	}); err != nil {
		t.Fatal(err)
	}
	_ = attacker.Flush()
	e.create(t, "tick")
	var victimConsumer string
	for deadline := time.Now().Add(5 * time.Second); victimConsumer == "" && time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		mu.Lock()
		for n := range names {
			victimConsumer = n
		}
		mu.Unlock()
	}
	if victimConsumer == "" {
		t.Skip("(held) the attacker saw no other verifier's delivery")
	}
	t.Logf("the attacker learnt the victim's consumer %s", victimConsumer)
	api := "$JS." + events.SubscriberDomain + ".API."
	resp, err := attacker.Request(api+"CONSUMER.INFO."+events.StreamName+"."+victimConsumer, nil, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	var info struct {
		Config map[string]any `json:"config"`
	}
	if err := json.Unmarshal(resp.Data, &info); err != nil || info.Config == nil {
		t.Fatalf("consumer info: %s", resp.Data)
	}
	change(info.Config)
	req, _ := json.Marshal(map[string]any{"stream_name": events.StreamName, "config": info.Config, "action": "update"})
	resp, err = attacker.Request(api+"CONSUMER.CREATE."+events.StreamName+"."+victimConsumer, req, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("update of the victim's consumer: %.300s", resp.Data)

	if _, err := e.keys.Revoke(context.Background(), "acme", victimKey.Key.ID, domain.RevokeKey{Reason: "leaked", By: asSystem}); err != nil {
		t.Fatal(err)
	}
	after := e.create(t, "after")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := v.WaitFor(ctx, after.Key.Version); err != nil {
		t.Fatalf("the victim did not reach the key made after the revocation: %v", err)
	}
	if got := v.Verify(victimKey.Secret); got.Code != domain.VerifyRevoked {
		t.Errorf("another reader narrowed the victim's consumer: the revoked key verifies %s at the victim", got.Code)
	}
}

// red5State is the last sequence of the stream and of every bucket the
// service has.
func (e *red5Env) state(t *testing.T, ctx context.Context) map[string]uint64 {
	t.Helper()
	out := map[string]uint64{}
	for name := range e.svcJS.StreamNames(ctx).Name() {
		s, err := e.svcJS.Stream(ctx, name)
		if err != nil {
			t.Fatalf("stream %s: %v", name, err)
		}
		out[name] = s.CachedInfo().State.LastSeq
	}
	return out
}

// TestAttackRed5HeldNothingLandsInTheServiceAccount (held): what is left
// for the read-only user to have the server publish, in the service's
// account, on a subject of its choosing. A flow-control answer
// ($JS.FC.KEYLEDGER.>, imported as it is) with a landing reply; a request
// carrying a forged Nats-Request-Info naming the service's account (the
// header JetStream takes the account from); push consumers of KEYLEDGER
// delivering into the buckets, the snapshot's metadata, the API (delete,
// purge, stream create) and a response subject. Nothing lands and no
// stream or bucket changes. (The flow control and the consumers are no
// longer imported at all: they are refused.)
func TestAttackRed5HeldNothingLandsInTheServiceAccount(t *testing.T) {
	e := startRed5(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	k := e.create(t, "k")
	for _, b := range []string{events.IdempotencyBucket, "KEYLEDGER_SESSIONS"} {
		if _, err := e.svcJS.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: b}); err != nil {
			t.Fatal(err)
		}
	}
	snaps, err := e.svcJS.CreateObjectStore(ctx, jetstream.ObjectStoreConfig{Bucket: events.SnapshotBucket})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := snaps.PutBytes(ctx, "snap", []byte("snapshot")); err != nil {
		t.Fatal(err)
	}
	before := e.state(t, ctx)
	nc := e.reader(t)
	revoked := events.Subject("acme", k.Key.ID, domain.TypeKeyRevoked)
	landing := []string{revoked, "$KV." + events.IdempotencyBucket + ".forged", "$O." + events.SnapshotBucket + ".M.forged",
		"$JS.API.STREAM.DELETE." + events.StreamName, "$JS.API.STREAM.DELETE." + events.SnapshotStream}
	for _, reply := range landing {
		for _, subj := range []string{"$JS.FC." + events.StreamName + ".x.y", "$JS.FC." + events.StreamName + ".>"} {
			_ = nc.PublishMsg(&nats.Msg{Subject: subj, Reply: reply, Data: []byte("{}")})
		}
	}
	// A forged Nats-Request-Info: JetStream takes the account it acts in
	// from it.
	api := "$JS." + events.SubscriberDomain + ".API."
	forged := nats.Header{"Nats-Request-Info": []string{`{"acc":"$G","svc":"$G","user":"x"}`}}
	for _, subj := range []string{"$JS.API.STREAM.INFO." + events.StreamName, api + "STREAM.INFO." + events.StreamName} {
		resp, err := nc.RequestMsg(&nats.Msg{Subject: subj, Header: forged}, 2*time.Second)
		if err != nil {
			t.Fatalf("%s: %v", subj, err)
		}
		if subj[len("$JS."):][:4] == "API." && !strings.Contains(string(resp.Data), "not enabled") {
			t.Errorf("a forged Nats-Request-Info had %s answered in the service's account: %.200s", subj, resp.Data)
		}
		for _, reply := range landing {
			_ = nc.PublishMsg(&nats.Msg{Subject: subj, Reply: reply, Header: forged})
		}
	}
	// Push consumers delivering where a message would act or land.
	targets := append(landing, "$KV.KEYLEDGER_SESSIONS.forged",
		"$JS.API.STREAM.PURGE."+events.SnapshotStream,
		"$JS.API.STREAM.CREATE.EVIL",
		"$JS.API.CONSUMER.DELETE."+events.StreamName+".x",
		"_R_.abc.def")
	for i, deliver := range targets {
		name := fmt.Sprintf("push%d", i)
		req, _ := json.Marshal(map[string]any{"stream_name": events.StreamName, "config": map[string]any{
			"durable_name": name, "deliver_subject": deliver, "deliver_policy": "all", "ack_policy": "none"}})
		if resp, err := nc.Request(api+"CONSUMER.CREATE."+events.StreamName+"."+name, req, time.Second); err == nil {
			t.Errorf("the read-only user made a push consumer to %s: %.120s", deliver, resp.Data)
		}
	}
	_ = nc.Flush()
	time.Sleep(1500 * time.Millisecond)
	after := e.state(t, ctx)
	for name, seq := range before {
		if after[name] != seq {
			t.Errorf("the read-only user changed %s: last sequence %d → %d", name, seq, after[name])
		}
	}
	for name := range after {
		if _, ok := before[name]; !ok {
			t.Errorf("the read-only user made a stream %s", name)
		}
	}
}

func heapMiB() float64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return float64(m.HeapAlloc) / (1 << 20)
}

func dirMiB(t *testing.T, dir string) float64 {
	var n int64
	_ = filepath.Walk(dir, func(_ string, fi os.FileInfo, err error) error {
		if err == nil && !fi.IsDir() {
			n += fi.Size()
		}
		return nil
	})
	return float64(n) / (1 << 20)
}

// TestAttackRed5ReaderConsumerFlood: the read-only user may create
// consumers of KEYLEDGER with any name, durable ones included (or
// ephemeral ones with an inactive threshold of years), and may delete
// none. nats-server caps a stream at 1,000 consumers by default
// (JSDefaultMaxConsumersPerStream): the reader fills them in about a
// second and a half, for good, and then no one makes a consumer of
// KEYLEDGER: the service's projection feed once it starts again, every
// verifier that starts or whose feed is started again (an ordered
// consumer), the webhooks' durable consumers. Without the cap, each
// consumer costs the server about 29 KiB of heap. Fixed: the read-only
// account imports no consumer request (it follows the stream by direct
// gets), so it makes none, and the service and a verifier still start.
func TestAttackRed5ReaderConsumerFlood(t *testing.T) {
	const n = 1000
	dir := t.TempDir()
	emb, err := natsembed.Start(natsembed.Config{Dir: dir, Listen: "127.0.0.1:0", Logger: natstest.Quiet()})
	if err != nil {
		t.Fatal(err)
	}
	defer emb.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	svcJS, _ := jetstream.New(emb.Conn)
	signer := newSigner(t)
	store, err := events.Open(ctx, svcJS, events.Config{Logger: natstest.Quiet(), Signer: signer})
	if err != nil {
		t.Fatal(err)
	}
	e := &red5Env{emb: emb, svcJS: svcJS, store: store, keys: &domain.Keys{Store: store}, signers: events.NewSigners(signer.Public())}
	e.create(t, "k")
	nc := e.reader(t)
	h0, d0 := heapMiB(), dirMiB(t, dir)
	api := "$JS." + events.SubscriberDomain + ".API."
	start := time.Now()
	made := 0
	for i := range n {
		name := fmt.Sprintf("flood%05d", i)
		req, _ := json.Marshal(map[string]any{"stream_name": events.StreamName, "config": map[string]any{
			"durable_name": name, "ack_policy": "explicit", "deliver_policy": "all"}})
		resp, err := nc.Request(api+"CONSUMER.CREATE."+events.StreamName+"."+name, req, time.Second)
		if err == nil && !strings.Contains(string(resp.Data), `"error"`) {
			made++
		}
		if i == 9 && made == 0 {
			break // refused: the rest would be too
		}
	}
	t.Logf("the read-only user made %d durable consumers in %s: heap +%.1f MiB, disk +%.1f MiB",
		made, time.Since(start).Round(time.Millisecond), heapMiB()-h0, dirMiB(t, dir)-d0)
	if made > 0 {
		t.Errorf("the read-only user made %d consumers of %s; it may make none", made, events.StreamName)
	}

	stream, err := svcJS.Stream(ctx, events.StreamName)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := stream.CreateConsumer(ctx, jetstream.ConsumerConfig{AckPolicy: jetstream.AckNonePolicy}); err != nil {
		t.Errorf("after the read-only user's consumers, the service cannot make one: %v", err)
	}
	js, _ := jetstream.New(e.reader(t))
	vctx, vcancel := context.WithTimeout(ctx, 5*time.Second)
	defer vcancel()
	v, err := verifier.New(vctx, js, verifier.Options{Signers: e.signers, Logger: natstest.Quiet(), FullReplay: true})
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	if err := v.WaitReady(vctx); err != nil {
		t.Errorf("after the read-only user's consumers, a verifier does not get ready: %v", err)
	}
}

// TestAttackRed5HeldResponseImportsAreBounded (held, bounded): every
// request across a service import leaves the service's account a
// response mapping until it is answered, or, for a streamed answer
// (direct gets), until the export's response threshold (10 s; the
// server's default is 2 min) passes. Requests whose answers nobody reads cost the server memory
// for that long only. Measured here: the heap the mappings of n direct
// gets hold, and that it is given back.
func TestAttackRed5HeldResponseImportsAreBounded(t *testing.T) {
	const n = 50000
	e := startRed5(t)
	e.create(t, "k")
	nc := e.reader(t)
	api := "$JS." + events.SubscriberDomain + ".API."
	// It listens on the replies, so that they have interest, and reads none.
	if _, err := nc.Subscribe(events.SubscriberInbox+".nobody.>", func(*nats.Msg) {}); err != nil {
		t.Fatal(err)
	}
	h0 := heapMiB()
	start := time.Now()
	for i := range n {
		_ = nc.PublishMsg(&nats.Msg{Subject: api + "DIRECT.GET." + events.StreamName, Reply: fmt.Sprintf("%s.nobody.%d", events.SubscriberInbox, i), Data: []byte(`{"seq":1}`)})
	}
	_ = nc.Flush()
	time.Sleep(2 * time.Second)
	h1 := heapMiB()
	t.Logf("pending responses in the service's account: %d; reader connected: %v", e.emb.Server.GlobalAccount().NumPendingAllResponses(), nc.IsConnected())
	t.Logf("%d streamed requests never read, in %s: heap +%.1f MiB (%.0f B each)", n, time.Since(start).Round(time.Millisecond), h1-h0, (h1-h0)*(1<<20)/n)
	if per := (h1 - h0) * (1 << 20) / n; per > 4096 {
		t.Errorf("each unread answer holds %.0f bytes", per)
	}
	// They are let go once the export's response threshold (10 s, not
	// the server's default 2 min) has passed.
	deadline := time.Now().Add(30 * time.Second)
	for e.emb.Server.GlobalAccount().NumPendingAllResponses() > n/100 {
		if time.Now().After(deadline) {
			t.Fatalf("%d answers still pending 30 s later", e.emb.Server.GlobalAccount().NumPendingAllResponses())
		}
		time.Sleep(500 * time.Millisecond)
	}
	t.Logf("given back after %s: heap +%.1f MiB", time.Since(start).Round(time.Second), heapMiB()-h0)
}
