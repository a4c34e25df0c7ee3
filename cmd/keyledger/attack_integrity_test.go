package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/keyledger/keyledger/domain"
	"github.com/keyledger/keyledger/events"
	"github.com/keyledger/keyledger/events/natsembed"
	"github.com/keyledger/keyledger/internal/natstest"
	"github.com/keyledger/keyledger/projections"
)

// insider is someone holding the NATS service credential of a running
// `keyledger serve --nats-listen`: they may publish anything anywhere.
func insider(t *testing.T, dir, natsAddr string) jetstream.JetStream {
	t.Helper()
	nk, err := nats.NkeyOptionFromSeed(filepath.Join(dir, "data", "nats-service.nk"))
	if err != nil {
		t.Fatal(err)
	}
	nc, err := nats.Connect("nats://"+natsAddr, nk)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return js
}

// call sends a request to a running instance and returns the status and body.
func call(t *testing.T, method, url, token, body string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(method, url, strings.NewReader(body))
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	raw, _ := io.ReadAll(res.Body)
	return res.StatusCode, string(raw)
}

// verifyCode asks an instance what a key is worth once it has applied seq.
func verifyCode(t *testing.T, url, secret string, seq uint64) string {
	t.Helper()
	_, body := call(t, "POST", fmt.Sprintf("%s/v1/verify?min_seq=%d", url, seq), "", `{"key":"`+secret+`"}`)
	var v struct{ Code string }
	_ = json.Unmarshal([]byte(body), &v)
	return v.Code
}

// forgeEvent publishes e, unsigned, through js.
func forgeEvent(t *testing.T, js jetstream.JetStream, e domain.Event) uint64 {
	t.Helper()
	body, err := events.Encode(e)
	if err != nil {
		t.Fatal(err)
	}
	ack, err := js.Publish(context.Background(), events.Subject(e.OrgID, e.KeyID, e.Type), body)
	if err != nil {
		t.Fatal(err)
	}
	return ack.Sequence
}

// attackerSnapshots writes a snapshot into the bucket as the insider can:
// the right format, the attacker's content, no signature.
type attackerSnapshots struct {
	obs    jetstream.ObjectStore
	stream jetstream.Stream
}

func (a attackerSnapshots) Put(ctx context.Context, r io.Reader) error {
	_, err := a.obs.Put(ctx, jetstream.ObjectMeta{Name: "projections"}, r)
	return err
}

func (a attackerSnapshots) Get(context.Context) (io.ReadCloser, error) { return nil, nil }

func (a attackerSnapshots) MsgHash(ctx context.Context, seq uint64) (string, error) {
	m, err := a.stream.GetMsg(ctx, seq)
	if err != nil {
		return "", err
	}
	return events.BodyHash(m.Data), nil
}

// TestAttackInsiderCannotMintNorRevoke replays the integrity attack against
// the real binary: with the NATS service credential the insider publishes
// a KeyCreated of a key whose secret they chose, holding keys:manage, a
// KeyRevoked of the org's admin key, a junk message on the checkpoint
// subject, and a snapshot holding their key. The key never verifies nor
// manages anything, the admin key stays valid, neither shows in the
// history, checkpoints go on, a restart ignores the snapshot, and the
// audit names every forged message.
func TestAttackInsiderCannotMintNorRevoke(t *testing.T) {
	dir := t.TempDir()
	addr, natsAddr := freeAddr(t), freeAddr(t)
	env := []string{"KEYLEDGER_HTTP_ADDR=" + addr, "KEYLEDGER_NATS_LISTEN=" + natsAddr, "KEYLEDGER_CHECKPOINT_INTERVAL=1s"}
	admin, stderr, err := runBinary(t, dir, env, "bootstrap", "--org", "acme", "--name", "admin")
	if err != nil {
		t.Fatalf("bootstrap: %v %s", err, stderr)
	}
	admin = strings.TrimSpace(admin)
	adminID := regexp.MustCompile(`key_[0-9A-Z]{26}`).FindString(stderr)
	p := serveProcess(t, dir, addr, env)
	js := insider(t, dir, natsAddr)

	secret, _ := domain.GenerateSecret(domain.DefaultPrefix, nil)
	by := domain.SystemPrincipal("bootstrap", "keyledger bootstrap")
	minted, err := domain.DecideCreate(domain.CreateKey{OrgID: "acme", Name: "ops automation", Scopes: []string{domain.ScopeManage}, By: by}, time.Now(), 0, secret)
	if err != nil {
		t.Fatal(err)
	}
	forged := []uint64{forgeEvent(t, js, minted)}
	forged = append(forged, forgeEvent(t, js, domain.Event{ID: domain.NewEventID(), Type: domain.TypeKeyRevoked, SchemaVersion: 1,
		OrgID: "acme", KeyID: adminID, OccurredAt: time.Now(), Actor: by.Actor, Data: domain.KeyRevoked{Reason: "rotated out"}}))
	ack, err := js.Publish(context.Background(), events.CheckpointSubject, []byte(`{"to_seq": 18446744073709551000}`))
	if err != nil {
		t.Fatal(err)
	}
	forged = append(forged, ack.Sequence)
	last := ack.Sequence

	if got := verifyCode(t, p.url, secret, last); got != domain.VerifyNotFound {
		t.Errorf("the insider's key verifies %q, want NOT_FOUND", got)
	}
	if code, body := call(t, "GET", p.url+"/v1/orgs/acme/keys", secret, ""); code != http.StatusUnauthorized {
		t.Errorf("the insider's key lists keys: %d %s, want 401", code, body)
	}
	if got := verifyCode(t, p.url, admin, last); got != domain.VerifyValid {
		t.Errorf("the admin key verifies %q after a forged revocation, want VALID", got)
	}
	if code, _ := call(t, "GET", p.url+"/v1/orgs/acme/keys/"+minted.KeyID+"/events", admin, ""); code != http.StatusNotFound {
		t.Errorf("the forged key's history answers %d, want 404", code)
	}
	_, body := call(t, "GET", p.url+"/v1/orgs/acme/events?limit=1000", admin, "")
	if strings.Contains(body, minted.KeyID) || strings.Contains(body, "rotated out") {
		t.Errorf("the org's history shows a forged event: %s", body)
	}
	if _, metrics := call(t, "GET", p.url+"/metrics", "", ""); !strings.Contains(metrics, "keyledger_events_rejected_total 2") {
		t.Errorf("the metrics do not count the two forged events:\n%s", grepLines(metrics, "rejected"))
	}
	if log := p.stderr.String(); !strings.Contains(log, `"level":"ERROR","msg":"refusing an event no trusted keyledger instance wrote`) {
		t.Error("no error line for the forged events")
	}

	// Checkpoints go on past the junk.
	code, out := call(t, "POST", p.url+"/v1/orgs/acme/keys", admin, `{"name":"after the attack"}`)
	if code != http.StatusCreated {
		t.Fatalf("create: %d %s", code, out)
	}
	var created struct{ Key struct{ Version uint64 } }
	_ = json.Unmarshal([]byte(out), &created)
	deadline := time.Now().Add(20 * time.Second)
	for {
		_, out := call(t, "GET", p.url+"/v1/audit/head", "", "")
		var head events.Head
		if json.Unmarshal([]byte(out), &head) == nil && head.ToSeq >= created.Key.Version {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no checkpoint covered seq %d within 20 s of a junk checkpoint: head %s", created.Key.Version, out)
		}
		time.Sleep(200 * time.Millisecond)
	}

	// A snapshot in the right format, holding the insider's key.
	obs, err := js.ObjectStore(context.Background(), events.SnapshotBucket)
	if err != nil {
		t.Fatal(err)
	}
	stream, _ := js.Stream(context.Background(), events.StreamName)
	table := projections.NewTable()
	minted.Seq, minted.Trusted = 1, true
	_ = table.Apply(minted)
	info, err := stream.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	seq := info.State.LastSeq
	hash, err := attackerSnapshots{obs, stream}.MsgHash(context.Background(), seq)
	if err != nil {
		t.Fatal(err)
	}
	if err := (&projections.Snapshotter{Store: attackerSnapshots{obs, stream}, Table: table, Logger: natstest.Quiet()}).SaveNow(seq, hash); err != nil {
		t.Fatal(err)
	}
	p.stop(t)
	p = serveProcess(t, dir, addr, env)
	if !strings.Contains(p.stderr.String(), "not signed by a trusted keyledger instance") {
		t.Errorf("the restart does not say it ignored the forged snapshot:\n%s", grepLines(p.stderr.String(), "snapshot"))
	}
	if got := verifyCode(t, p.url, secret, seq); got != domain.VerifyNotFound {
		t.Errorf("after a restart on the forged snapshot the insider's key verifies %q, want NOT_FOUND", got)
	}
	p.stop(t)

	out, _, err = runBinary(t, dir, nil, "audit", "verify")
	if err == nil {
		t.Errorf("audit verify passes a stream holding forgeries:\n%s", out)
	}
	for _, seq := range forged {
		if !strings.Contains(out, "FORGED at sequence "+strconv.FormatUint(seq, 10)+":") {
			t.Errorf("audit verify does not name the forgery at seq %d:\n%s", seq, out)
		}
	}
}

// grepLines returns the lines of text holding word.
func grepLines(text, word string) string {
	var out []string
	for _, l := range strings.Split(text, "\n") {
		if strings.Contains(l, word) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// TestAttackAuditFailsWithoutACheckpoint: a stream no checkpoint vouches
// for (bootstrap writes an event, and no server ever ran) is not intact.
func TestAttackAuditFailsWithoutACheckpoint(t *testing.T) {
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "data"), 0o700); err != nil {
		t.Fatal(err)
	}
	// The signing key an auditor checks against exists; no checkpoint does.
	if _, err := events.LoadOrCreateSigningKey(filepath.Join(dir, "data", "audit-signing-key.pem")); err != nil {
		t.Fatal(err)
	}
	if _, stderr, err := runBinary(t, dir, nil, "bootstrap", "--org", "acme", "--name", "admin"); err != nil {
		t.Fatalf("bootstrap: %v %s", err, stderr)
	}
	out, _, err := runBinary(t, dir, nil, "audit", "verify")
	if err == nil || !strings.Contains(out, "no signed checkpoint") {
		t.Errorf("audit verify of a stream without checkpoints: %v\n%s", err, out)
	}
}

// TestAttackBurstBetweenCheckpointsIsIntact replays the false alarm:
// bootstrap, 300 creates within a minute, a clean stop; the audit answered
// "NOT INTACT at sequence 259" on a stream nobody touched.
func TestAttackBurstBetweenCheckpointsIsIntact(t *testing.T) {
	dir := t.TempDir()
	addr := freeAddr(t)
	env := []string{"KEYLEDGER_HTTP_ADDR=" + addr, "KEYLEDGER_WRITE_RATE_LIMIT=0"}
	admin, stderr, err := runBinary(t, dir, env, "bootstrap", "--org", "acme", "--name", "admin")
	if err != nil {
		t.Fatalf("bootstrap: %v %s", err, stderr)
	}
	admin = strings.TrimSpace(admin)
	p := serveProcess(t, dir, addr, env)
	for i := range 300 {
		if code, body := call(t, "POST", p.url+"/v1/orgs/acme/keys", admin, fmt.Sprintf(`{"name":"burst %d"}`, i)); code != http.StatusCreated {
			t.Fatalf("create %d: %d %s", i, code, body)
		}
	}
	p.stop(t)
	out, _, err := runBinary(t, dir, nil, "audit", "verify")
	if err != nil || !strings.HasPrefix(out, "intact up to sequence") {
		t.Errorf("audit verify after a burst of 300 creates: %v\n%s", err, out)
	}
}

// TestAttackRecreatedStreamFailsTheAnchor deletes the stream and recreates
// it with a shorter history, every message of it as keyledger wrote it,
// up to a signed checkpoint: the audit alone cannot tell, the anchor the
// auditor saved earlier can.
func TestAttackRecreatedStreamFailsTheAnchor(t *testing.T) {
	dir := t.TempDir()
	addr := freeAddr(t)
	env := []string{"KEYLEDGER_HTTP_ADDR=" + addr, "KEYLEDGER_CHECKPOINT_INTERVAL=1s"}
	admin, stderr, err := runBinary(t, dir, env, "bootstrap", "--org", "acme", "--name", "admin")
	if err != nil {
		t.Fatalf("bootstrap: %v %s", err, stderr)
	}
	admin = strings.TrimSpace(admin)
	p := serveProcess(t, dir, addr, env)
	for i := range 3 {
		call(t, "POST", p.url+"/v1/orgs/acme/keys", admin, fmt.Sprintf(`{"name":"k%d"}`, i))
		time.Sleep(1200 * time.Millisecond) // a checkpoint after each
	}
	p.stop(t)
	anchor := filepath.Join(t.TempDir(), "anchor.json")
	if out, _, err := runBinary(t, dir, nil, "audit", "verify", "--save-anchor", anchor); err != nil {
		t.Fatalf("audit verify --save-anchor: %v\n%s", err, out)
	}

	// The insider, with the files: copy the stream, delete it, and put back
	// its messages up to the first checkpoint after the first event.
	emb, err := natsembed.Start(natsembed.Config{Dir: filepath.Join(dir, "data"), Logger: natstest.Quiet()})
	if err != nil {
		t.Fatal(err)
	}
	js, _ := jetstream.New(emb.Conn)
	ctx := context.Background()
	stream, err := js.Stream(ctx, events.StreamName)
	if err != nil {
		t.Fatal(err)
	}
	cfg := stream.CachedInfo().Config
	var keep []*nats.Msg
	for seq := uint64(1); ; seq++ {
		m, err := stream.GetMsg(ctx, seq)
		if err != nil {
			t.Fatalf("message %d: %v", seq, err)
		}
		h := nats.Header{}
		for _, k := range []string{events.SignerHeader, events.SignatureHeader} {
			if v := m.Header.Get(k); v != "" {
				h.Set(k, v)
			}
		}
		keep = append(keep, &nats.Msg{Subject: m.Subject, Header: h, Data: m.Data})
		if m.Subject == events.CheckpointSubject && seq > 2 {
			break
		}
	}
	natstest.Recreate(t, ctx, js, cfg)
	for _, m := range keep {
		if _, err := js.PublishMsg(ctx, m); err != nil {
			t.Fatal(err)
		}
	}
	emb.Close()

	out, _, err := runBinary(t, dir, nil, "audit", "verify")
	if err != nil {
		t.Logf("without the anchor: %v\n%s", err, out)
	}
	out, _, err = runBinary(t, dir, nil, "audit", "verify", "--anchor", anchor)
	if err == nil || !strings.Contains(out, "no longer holds the anchor") {
		t.Errorf("audit verify --anchor of a recreated, shorter stream: %v\n%s", err, out)
	}
	raw, _ := os.ReadFile(anchor)
	if !bytes.Contains(raw, []byte(`"chain"`)) {
		t.Errorf("the anchor holds no chain: %s", raw)
	}
}

// TestAttackClusterForgedEventWithTwoSigners replays the forged KeyCreated
// on a three-node cluster served by two instances, each signing with a key
// of its own, both trusting both (one --event-signers file): each accepts
// the other's events and refuses the forgeries, unsigned or signed by a
// key outside the set; the audit with the same trust set names them.
func TestAttackClusterForgedEventWithTwoSigners(t *testing.T) {
	if testing.Short() {
		t.Skip("a cluster test: not in -short")
	}
	nodes := cluster(t)
	dir := t.TempDir()
	var trust []byte
	keyFiles := make([]string, 3)
	for i := range keyFiles {
		keyFiles[i] = filepath.Join(dir, fmt.Sprintf("signing-%d.pem", i))
		pub, stderr, err := runBinary(t, dir, nil, "keygen", keyFiles[i])
		if err != nil {
			t.Fatalf("keygen: %v %s", err, stderr)
		}
		if i < 2 { // the third key is the attacker's
			trust = append(trust, pub...)
		}
	}
	signers := filepath.Join(dir, "signers.pem")
	if err := os.WriteFile(signers, trust, 0o644); err != nil {
		t.Fatal(err)
	}
	common := []string{"KEYLEDGER_NATS_URL=" + urls(nodes), "KEYLEDGER_STREAM_REPLICAS=3", "KEYLEDGER_EVENT_SIGNERS=" + signers,
		"KEYLEDGER_CHECKPOINT_INTERVAL=1s"}
	admin, stderr, err := runBinary(t, dir, append([]string{"KEYLEDGER_SIGNING_KEY=" + keyFiles[0]}, common...), "bootstrap", "--org", "acme", "--name", "admin")
	if err != nil {
		t.Fatalf("bootstrap: %v %s", err, stderr)
	}
	admin = strings.TrimSpace(admin)
	var inst []*process
	for i := range 2 {
		addr := freeAddr(t)
		inst = append(inst, serveProcess(t, dir, addr, append([]string{"KEYLEDGER_HTTP_ADDR=" + addr, "KEYLEDGER_SIGNING_KEY=" + keyFiles[i]}, common...)))
	}

	// B's events count on A.
	code, out := call(t, "POST", inst[1].url+"/v1/orgs/acme/keys", admin, `{"name":"made on B"}`)
	if code != http.StatusCreated {
		t.Fatalf("create on B: %d %s", code, out)
	}
	var made struct {
		Key    struct{ Version uint64 }
		Secret string
	}
	_ = json.Unmarshal([]byte(out), &made)
	if got := verifyCode(t, inst[0].url, made.Secret, made.Key.Version); got != domain.VerifyValid {
		t.Errorf("a key B made verifies %q on A, want VALID", got)
	}

	nc, err := nats.Connect(urls(nodes))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	secret, _ := domain.GenerateSecret(domain.DefaultPrefix, nil)
	by := domain.SystemPrincipal("bootstrap", "keyledger bootstrap")
	unsigned, _ := domain.DecideCreate(domain.CreateKey{OrgID: "acme", Name: "forged", Scopes: []string{domain.ScopeManage}, By: by}, time.Now(), 0, secret)
	forged := []uint64{forgeEvent(t, js, unsigned)}
	priv, err := events.LoadOrCreateSigningKey(keyFiles[2])
	if err != nil {
		t.Fatal(err)
	}
	stranger, _ := domain.DecideCreate(domain.CreateKey{OrgID: "acme", Name: "forged too", Scopes: []string{domain.ScopeManage}, By: by}, time.Now(), 0, secret)
	body, _ := events.Encode(stranger)
	m := &nats.Msg{Subject: events.Subject("acme", stranger.KeyID, domain.TypeKeyCreated), Data: body}
	events.NewSigner(priv).SignEvent(m)
	ack, err := js.PublishMsg(context.Background(), m)
	if err != nil {
		t.Fatal(err)
	}
	forged = append(forged, ack.Sequence)
	for i, p := range inst {
		if got := verifyCode(t, p.url, secret, ack.Sequence); got != domain.VerifyNotFound {
			t.Errorf("instance %d: the forged key verifies %q, want NOT_FOUND", i, got)
		}
		if _, metrics := call(t, "GET", p.url+"/metrics", "", ""); !strings.Contains(metrics, "keyledger_events_rejected_total 2") {
			t.Errorf("instance %d does not count both forgeries:\n%s", i, grepLines(metrics, "rejected"))
		}
	}
	// Once a checkpoint covers them, the audit with the deployment's trust
	// set names both, and only them.
	time.Sleep(2500 * time.Millisecond)
	out, stderr, err = runBinary(t, dir, []string{"KEYLEDGER_NATS_URL=" + urls(nodes), "KEYLEDGER_EVENT_SIGNERS=" + signers}, "audit", "verify")
	if err == nil || strings.Contains(out, "NOT INTACT") || strings.Count(out, "FORGED at") != len(forged) {
		t.Errorf("audit verify of the cluster: %v\n%s%s", err, out, stderr)
	}
	for _, seq := range forged {
		if !strings.Contains(out, "FORGED at sequence "+strconv.FormatUint(seq, 10)+":") {
			t.Errorf("the audit does not name the forgery at seq %d:\n%s", seq, out)
		}
	}
}

// TestSigningKeyRotationWithoutRestart walks the documented steps on a
// running embedded instance: trust a new key, sign with it, retire the old
// one after the last sequence it signed; each step a SIGHUP, no restart.
// Keys signed before and after verify throughout and after a replay; an
// event signed with the retired key afterwards (as by whoever stole it)
// counts nowhere.
func TestSigningKeyRotationWithoutRestart(t *testing.T) {
	dir := t.TempDir()
	addr, natsAddr := freeAddr(t), freeAddr(t)
	env := []string{"KEYLEDGER_HTTP_ADDR=" + addr, "KEYLEDGER_NATS_LISTEN=" + natsAddr}
	admin, stderr, err := runBinary(t, dir, env, "bootstrap", "--org", "acme", "--name", "admin")
	if err != nil {
		t.Fatalf("bootstrap: %v %s", err, stderr)
	}
	admin = strings.TrimSpace(admin)
	p := serveProcess(t, dir, addr, env)
	create := func(name string) (secret string, seq uint64) {
		code, out := call(t, "POST", p.url+"/v1/orgs/acme/keys", admin, `{"name":"`+name+`"}`)
		if code != http.StatusCreated {
			t.Fatalf("create %s: %d %s", name, code, out)
		}
		var c struct {
			Key    struct{ Version uint64 }
			Secret string
		}
		_ = json.Unmarshal([]byte(out), &c)
		return c.Secret, c.Key.Version
	}
	hangup := func(want string) {
		t.Helper()
		before := strings.Count(p.stderr.String(), want)
		if err := p.cmd.Process.Signal(syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(10 * time.Second)
		for strings.Count(p.stderr.String(), want) == before {
			if time.Now().After(deadline) {
				t.Fatalf("no %q in the log within 10 s of SIGHUP:\n%s", want, p.stderr)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	before, _ := create("signed by the first key")

	// 1. Trust the new key as well.
	keyFile := filepath.Join(dir, "data", "audit-signing-key.pem")
	oldPub, _, err := runBinary(t, dir, nil, "audit", "pubkey")
	if err != nil {
		t.Fatal(err)
	}
	newKey := filepath.Join(dir, "new-signing-key.pem")
	newPub, _, err := runBinary(t, dir, nil, "keygen", newKey)
	if err != nil {
		t.Fatal(err)
	}
	signers := filepath.Join(dir, "data", "event-signers.pem")
	if err := os.WriteFile(signers, []byte(oldPub+newPub), 0o644); err != nil {
		t.Fatal(err)
	}
	hangup("signing events and checkpoints")
	// 2. Sign with it (the old private key kept aside: the thief's copy).
	stolen, err := events.LoadOrCreateSigningKey(keyFile)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(newKey, keyFile); err != nil {
		t.Fatal(err)
	}
	hangup("signing events and checkpoints")
	after, _ := create("signed by the new key")
	for _, s := range []string{admin, before, after} {
		if got := verifyCode(t, p.url, s, 0); got != domain.VerifyValid {
			t.Errorf("during the rotation a key verifies %q, want VALID", got)
		}
	}
	// 3. Retire the old key after the last sequence it signed.
	_, ready := call(t, "GET", p.url+"/readyz", "", "")
	var r struct {
		AppliedSeq uint64 `json:"applied_seq"`
	}
	_ = json.Unmarshal([]byte(ready), &r)
	retired := strings.Replace(oldPub, "-----BEGIN PUBLIC KEY-----\n", fmt.Sprintf("-----BEGIN PUBLIC KEY-----\n%s: %d\n\n", events.RetiredAfterHeader, r.AppliedSeq), 1)
	if err := os.WriteFile(signers, []byte(retired+newPub), 0o644); err != nil {
		t.Fatal(err)
	}
	hangup("signing events and checkpoints")

	// The thief signs a KeyCreated with the retired key.
	js := insider(t, dir, natsAddr)
	secret, _ := domain.GenerateSecret(domain.DefaultPrefix, nil)
	e, _ := domain.DecideCreate(domain.CreateKey{OrgID: "acme", Name: "stolen key's", Scopes: []string{domain.ScopeManage}, By: domain.SystemPrincipal("x", "x")}, time.Now(), 0, secret)
	body, _ := events.Encode(e)
	m := &nats.Msg{Subject: events.Subject("acme", e.KeyID, domain.TypeKeyCreated), Data: body}
	events.NewSigner(stolen).SignEvent(m)
	ack, err := js.PublishMsg(context.Background(), m)
	if err != nil {
		t.Fatal(err)
	}
	if got := verifyCode(t, p.url, secret, ack.Sequence); got != domain.VerifyNotFound {
		t.Errorf("an event signed with the retired key after its retirement verifies %q, want NOT_FOUND", got)
	}
	p.stop(t)
	p = serveProcess(t, dir, addr, env)
	for _, s := range []string{admin, before, after} {
		if got := verifyCode(t, p.url, s, 0); got != domain.VerifyValid {
			t.Errorf("after a replay a key verifies %q, want VALID", got)
		}
	}
	if got := verifyCode(t, p.url, secret, 0); got != domain.VerifyNotFound {
		t.Errorf("after a replay the thief's key verifies %q, want NOT_FOUND", got)
	}
	p.stop(t)
	out, _, _ := runBinary(t, dir, nil, "audit", "verify")
	if strings.Contains(out, "NOT INTACT") || strings.Count(out, "FORGED at") != 1 || !strings.Contains(out, fmt.Sprintf("FORGED at sequence %d:", ack.Sequence)) {
		t.Errorf("audit verify after the rotation: want the history whole and only the thief's event named:\n%s", out)
	}
}
