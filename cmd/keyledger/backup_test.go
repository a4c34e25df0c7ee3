package main

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"

	"github.com/keyledger/keyledger/domain"
	"github.com/keyledger/keyledger/events"
	"github.com/keyledger/keyledger/events/natsembed"
	"github.com/keyledger/keyledger/internal/natstest"
)

// backupKeys is how many keys the embedded round trip backs up:
// KEYLEDGER_TEST_BACKUP_KEYS (100000 for the figures in OPERATORS.md),
// else a few thousand.
func backupKeys(t *testing.T) int {
	if s := os.Getenv("KEYLEDGER_TEST_BACKUP_KEYS"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil {
			t.Fatalf("KEYLEDGER_TEST_BACKUP_KEYS: %v", err)
		}
		return n
	}
	return 3000
}

// fillKeys creates n keys in org bulk straight on the stopped embedded
// store of dataDir, each event signed with its signing key as an instance
// signs what it appends, and returns a few of their secrets.
func fillKeys(t *testing.T, dataDir string, n int) []string {
	t.Helper()
	priv, err := events.LoadOrCreateSigningKey(filepath.Join(dataDir, "audit-signing-key.pem"))
	if err != nil {
		t.Fatal(err)
	}
	signer := events.NewSigner(priv)
	emb, err := natsembed.Start(natsembed.Config{Dir: dataDir, Logger: natstest.Quiet()})
	if err != nil {
		t.Fatal(err)
	}
	defer emb.Close()
	js, _ := jetstream.New(emb.Conn, jetstream.WithPublishAsyncMaxPending(4096))
	msgs := make([]*nats.Msg, n)
	secrets := make([]string, n)
	var wg sync.WaitGroup
	workers := runtime.GOMAXPROCS(0)
	for w := range workers {
		wg.Go(func() {
			for i := w; i < n; i += workers {
				secret, _ := domain.GenerateSecret(domain.DefaultPrefix, nil)
				e, err := domain.DecideCreate(domain.CreateKey{OrgID: "bulk", Name: "bulk " + strconv.Itoa(i), Scopes: []string{"read"}, By: domain.SystemPrincipal("", "")}, time.Now(), 0, secret)
				if err != nil {
					panic(err)
				}
				body, _ := events.Encode(e)
				m := &nats.Msg{Subject: events.Subject(e.OrgID, e.KeyID, e.Type), Data: body}
				signer.SignEvent(m)
				msgs[i], secrets[i] = m, secret
			}
		})
	}
	wg.Wait()
	for i, m := range msgs {
		if _, err := js.PublishMsgAsync(m); err != nil {
			t.Fatal(err)
		}
		if i%10000 == 9999 || i == n-1 {
			select {
			case <-js.PublishAsyncComplete():
			case <-time.After(2 * time.Minute):
				t.Fatal("publishing the keys took over 2 minutes")
			}
		}
	}
	return []string{secrets[0], secrets[n/2], secrets[n-1]}
}

// deployment is what a restore must give back: the listings (without
// last_used_at, which is rolled up each flush, to the minute) and the
// verify answers of every secret.
type deployment struct {
	listings map[string]string
	verify   map[string]string
}

func observe(t *testing.T, url, admin string, secrets []string, seq uint64) deployment {
	t.Helper()
	d := deployment{listings: map[string]string{}, verify: map[string]string{}}
	for _, org := range []string{"acme"} {
		status, body := call(t, "GET", url+"/v1/orgs/"+org+"/keys?status=all&min_seq="+strconv.FormatUint(seq, 10), admin, "")
		if status != 200 {
			t.Fatalf("listing %s: %d %s", org, status, body)
		}
		var page struct{ Keys []map[string]any }
		if err := json.Unmarshal([]byte(body), &page); err != nil {
			t.Fatal(err)
		}
		for _, k := range page.Keys {
			delete(k, "last_used_at")
		}
		raw, _ := json.Marshal(page.Keys)
		d.listings[org] = string(raw)
	}
	for _, s := range secrets {
		_, body := call(t, "POST", url+"/v1/verify?min_seq="+strconv.FormatUint(seq, 10), "", `{"key":"`+s+`"}`)
		d.verify[s] = body
	}
	return d
}

func (d deployment) compare(t *testing.T, restored deployment) {
	t.Helper()
	for org, want := range d.listings {
		if got := restored.listings[org]; got != want {
			t.Errorf("listing of %s after the restore:\n%s\nbefore:\n%s", org, got, want)
		}
	}
	for s, want := range d.verify {
		if got := restored.verify[s]; got != want {
			t.Errorf("verify after the restore: %s, before: %s", got, want)
		}
	}
}

// manage makes keys through the API in org acme: kept, rotated with a
// grace period, revoked; it returns every secret they ever had and the
// last sequence.
func manage(t *testing.T, url, admin string) ([]string, uint64) {
	t.Helper()
	var secrets []string
	var ids []string
	for i := range 3 {
		status, body := call(t, "POST", url+"/v1/orgs/acme/keys", admin, `{"name":"key `+strconv.Itoa(i)+`"}`)
		if status != 201 {
			t.Fatalf("create: %d %s", status, body)
		}
		var out struct {
			Key    struct{ ID string }
			Secret string
		}
		_ = json.Unmarshal([]byte(body), &out)
		secrets, ids = append(secrets, out.Secret), append(ids, out.Key.ID)
	}
	status, body := call(t, "POST", url+"/v1/orgs/acme/keys/"+ids[1]+"/rotate", admin, `{"grace_period_seconds":3600}`)
	if status != 200 {
		t.Fatalf("rotate: %d %s", status, body)
	}
	var rotated struct{ Secret string }
	_ = json.Unmarshal([]byte(body), &rotated)
	secrets = append(secrets, rotated.Secret)
	if status, body := call(t, "DELETE", url+"/v1/orgs/acme/keys/"+ids[2], admin, ""); status != 204 {
		t.Fatalf("revoke: %d %s", status, body)
	}
	status, body = call(t, "GET", url+"/v1/orgs/acme/keys/"+ids[2]+"/events", admin, "")
	var evs struct{ Events []struct{ Seq uint64 } }
	_ = json.Unmarshal([]byte(body), &evs)
	if status != 200 || len(evs.Events) == 0 {
		t.Fatalf("history: %d %s", status, body)
	}
	// A well-formed key nobody made: NOT_FOUND, before and after.
	unknown, _ := domain.GenerateSecret(domain.DefaultPrefix, nil)
	return append(secrets, unknown), evs.Events[len(evs.Events)-1].Seq
}

// TestBackupAndRestoreOnTheEmbeddedStore backs a stopped embedded store
// up, restores it into a new data directory, and finds there the same
// listing, the same verify answers and the same audit verify result; then
// a second restore into it is refused, and a damaged file changes nothing.
func TestBackupAndRestoreOnTheEmbeddedStore(t *testing.T) {
	dir := t.TempDir()
	src, dst := filepath.Join(dir, "src"), filepath.Join(dir, "dst")
	admin, stderr, err := runBinary(t, dir, nil, "bootstrap", "--data-dir", src, "--org", "acme", "--name", "admin")
	if err != nil {
		t.Fatalf("bootstrap: %v %s", err, stderr)
	}
	admin = strings.TrimSpace(admin)
	n := backupKeys(t)
	start := time.Now()
	secrets := fillKeys(t, src, n)
	t.Logf("%d keys made in %s", n, time.Since(start).Round(time.Millisecond))

	env := func(data string) []string {
		addr := freeAddr(t)
		return []string{"KEYLEDGER_DATA_DIR=" + data, "KEYLEDGER_HTTP_ADDR=" + addr, "KEYLEDGER_CHECKPOINT_INTERVAL=1s"}
	}
	srcEnv := env(src)
	p := serveProcess(t, dir, strings.TrimPrefix(srcEnv[1], "KEYLEDGER_HTTP_ADDR="), srcEnv)
	made, seq := manage(t, p.url, admin)
	secrets = append(secrets, made...)
	before := observe(t, p.url, admin, secrets, seq)
	time.Sleep(2 * time.Second) // a checkpoint covers the last events
	p.stop(t)
	audited, _, auditErr := runBinary(t, dir, nil, "audit", "verify", "--data-dir", src)
	if !strings.Contains(audited, "INTACT") {
		t.Logf("audit verify of the source: %v %s", auditErr, audited)
	}

	file := filepath.Join(dir, "keyledger.backup")
	start = time.Now()
	out, stderr, err := runBinary(t, dir, nil, "backup", "--data-dir", src, "--out", file)
	if err != nil {
		t.Fatalf("backup: %v\n%s%s", err, out, stderr)
	}
	t.Logf("backup of %d keys: %s\n%s", n, time.Since(start).Round(time.Millisecond), out)
	if fi, err := os.Stat(file); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("backup file: %v, want mode 0600", err)
	}
	start = time.Now()
	out, stderr, err = runBinary(t, dir, nil, "restore", "--data-dir", dst, "--in", file)
	if err != nil {
		t.Fatalf("restore: %v\n%s%s", err, out, stderr)
	}
	t.Logf("restore of %d keys: %s\n%s", n, time.Since(start).Round(time.Millisecond), out)
	for _, name := range []string{"audit-signing-key.pem", "webhook-secrets.key"} {
		want, _ := os.ReadFile(filepath.Join(src, name))
		got, err := os.ReadFile(filepath.Join(dst, name))
		if err != nil || string(got) != string(want) {
			t.Errorf("%s not restored as it was: %v", name, err)
		}
	}

	restoredAudit, _, restoredErr := runBinary(t, dir, nil, "audit", "verify", "--data-dir", dst)
	if restoredAudit != audited || (auditErr == nil) != (restoredErr == nil) {
		t.Errorf("audit verify after the restore: %v %q; before: %v %q", restoredErr, restoredAudit, auditErr, audited)
	}
	dstEnv := env(dst)
	start = time.Now()
	q := serveProcess(t, dir, strings.TrimPrefix(dstEnv[1], "KEYLEDGER_HTTP_ADDR="), dstEnv)
	t.Logf("the restored store served in %s", time.Since(start).Round(time.Millisecond))
	before.compare(t, observe(t, q.url, admin, secrets, seq))
	q.stop(t)

	t.Run("ASecondRestoreIsRefused", func(t *testing.T) {
		_, stderr, err := runBinary(t, dir, nil, "restore", "--data-dir", dst, "--in", file)
		if err == nil || !strings.Contains(stderr, "not empty") || !strings.Contains(stderr, "KEYLEDGER") {
			t.Errorf("restore into the restored store: %v %s", err, stderr)
		}
	})
	t.Run("AnotherKeyInThePlaceOfTheBackupsIsNeverReplaced", func(t *testing.T) {
		fresh := filepath.Join(t.TempDir(), "data")
		other := filepath.Join(fresh, "audit-signing-key.pem")
		_ = os.MkdirAll(fresh, 0o700)
		if _, _, err := runBinary(t, dir, nil, "keygen", other); err != nil {
			t.Fatal(err)
		}
		_, stderr, err := runBinary(t, dir, nil, "restore", "--data-dir", fresh, "--in", file)
		if err == nil || !strings.Contains(stderr, "never replaces a key") {
			t.Errorf("restore over another signing key: %v %s", err, stderr)
		}
		if _, err := os.Stat(filepath.Join(fresh, "jetstream")); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("a refused restore started a store: %v", err)
		}
	})
	t.Run("ADamagedFileChangesNothing", func(t *testing.T) {
		raw, _ := os.ReadFile(file)
		bad := filepath.Join(t.TempDir(), "bad.backup")
		_ = os.WriteFile(bad, raw[:len(raw)/2], 0o600)
		fresh := filepath.Join(t.TempDir(), "data")
		_, stderr, err := runBinary(t, dir, nil, "restore", "--data-dir", fresh, "--in", bad)
		if err == nil || !strings.Contains(stderr, "damaged") || !strings.Contains(stderr, "nothing was restored") {
			t.Errorf("restore of a truncated file: %v %s", err, stderr)
		}
		if _, err := os.Stat(fresh); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("a refused restore made its data directory: %v", err)
		}
	})
}

// TestBackupOnlineThroughTheNATSPort backs up a running instance through
// its embedded server's client port: with the service credential it
// works; with the read-only one, or a credential NATS does not know, it
// fails saying why.
func TestBackupOnlineThroughTheNATSPort(t *testing.T) {
	dir := t.TempDir()
	addr, natsAddr := freeAddr(t), freeAddr(t)
	data := filepath.Join(dir, "data")
	p := serveProcess(t, dir, addr, []string{"KEYLEDGER_DATA_DIR=" + data, "KEYLEDGER_HTTP_ADDR=" + addr, "KEYLEDGER_NATS_LISTEN=" + natsAddr})
	admin, stderr, err := runBinary(t, dir, []string{"KEYLEDGER_SIGNING_KEY=" + filepath.Join(data, "audit-signing-key.pem")},
		"bootstrap", "--nats-url", "nats://"+natsAddr, "--nats-creds", filepath.Join(data, "nats-service.nk"), "--org", "acme", "--name", "admin")
	if err != nil {
		t.Fatalf("bootstrap: %v %s", err, stderr)
	}
	_, seq := manage(t, p.url, strings.TrimSpace(admin))
	url := "nats://" + natsAddr
	file := filepath.Join(dir, "online.backup")
	keys := []string{"--signing-key", filepath.Join(data, "audit-signing-key.pem"), "--webhook-secrets-key", filepath.Join(data, "webhook-secrets.key")}

	out, stderr, err := runBinary(t, dir, nil, append([]string{"backup", "--nats-url", url, "--nats-creds", filepath.Join(data, "nats-service.nk"), "--out", file}, keys...)...)
	if err != nil {
		t.Fatalf("online backup: %v\n%s%s", err, out, stderr)
	}
	if !strings.Contains(out, "KEYLEDGER") || !strings.Contains(out, "last sequence "+strconv.FormatUint(seq, 10)) || !strings.Contains(out, "signing-key, webhook-secrets-key") {
		t.Errorf("online backup said:\n%s", out)
	}
	// It restores into a new data directory like a stopped one's.
	if out, stderr, err := runBinary(t, dir, nil, "restore", "--data-dir", filepath.Join(dir, "restored"), "--in", file); err != nil {
		t.Fatalf("restore of the online backup: %v\n%s%s", err, out, stderr)
	}

	stranger := filepath.Join(dir, "stranger.nk")
	kp, _ := nkeys.CreateUser()
	seed, _ := kp.Seed()
	if err := os.WriteFile(stranger, append(seed, '\n'), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ name, creds, want string }{
		{"TheReadOnlyCredentialIsRefused", filepath.Join(data, "nats-subscriber.nk"), "not the read-only one"},
		{"AnUnknownCredentialIsRefused", stranger, "NATS refused the credential"},
		{"NoCredentialIsRefused", "", "NATS refused the credential"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := []string{"backup", "--nats-url", url, "--out", filepath.Join(dir, tc.name)}
			if tc.creds != "" {
				args = append(args, "--nats-creds", tc.creds)
			}
			_, stderr, err := runBinary(t, dir, nil, append(args, keys...)...)
			if err == nil || !strings.Contains(stderr, tc.want) {
				t.Errorf("backup: %v %s; want it to say %q", err, stderr, tc.want)
			}
			if _, err := os.Stat(filepath.Join(dir, tc.name)); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("a failed backup left a file: %v", err)
			}
		})
	}
}

// TestBackupAndRestoreOnACluster backs up a three-node cluster whose
// streams are replicated three times, through --nats-url, and restores it
// into another, empty, cluster: the streams keep their three replicas, and
// the listing, the verify answers and audit verify are the same.
func TestBackupAndRestoreOnACluster(t *testing.T) {
	if testing.Short() {
		t.Skip("a cluster test: not in -short")
	}
	dir := t.TempDir()
	from, to := cluster(t), cluster(t)
	srcKey, dstKey := filepath.Join(dir, "src", "signing.pem"), filepath.Join(dir, "dst", "signing.pem")
	_ = os.MkdirAll(filepath.Dir(srcKey), 0o700)
	env := func(nodes []*natsNode, key string) []string {
		return []string{"KEYLEDGER_NATS_URL=" + urls(nodes), "KEYLEDGER_STREAM_REPLICAS=3", "KEYLEDGER_SIGNING_KEY=" + key}
	}
	admin, stderr, err := runBinary(t, dir, env(from, srcKey), "bootstrap", "--org", "acme", "--name", "admin")
	if err != nil {
		t.Fatalf("bootstrap: %v %s", err, stderr)
	}
	admin = strings.TrimSpace(admin)
	addr := freeAddr(t)
	p := serveProcess(t, dir, addr, append(env(from, srcKey), "KEYLEDGER_HTTP_ADDR="+addr, "KEYLEDGER_CHECKPOINT_INTERVAL=1s"))
	secrets, seq := manage(t, p.url, admin)
	before := observe(t, p.url, admin, secrets, seq)
	time.Sleep(2 * time.Second) // a checkpoint covers the last events
	p.stop(t)
	audited, _, auditErr := runBinary(t, dir, env(from, srcKey), "audit", "verify")

	file := filepath.Join(dir, "cluster.backup")
	out, stderr, err := runBinary(t, dir, env(from, srcKey), "backup", "--out", file)
	if err != nil {
		t.Fatalf("backup: %v\n%s%s", err, out, stderr)
	}
	t.Logf("backup:\n%s", out)
	if !strings.Contains(out, "3 replica(s)") {
		t.Errorf("the backup does not say the streams had 3 replicas:\n%s", out)
	}
	// No --stream-replicas: the replicas come from the backup.
	restoreEnv := []string{"KEYLEDGER_NATS_URL=" + urls(to), "KEYLEDGER_SIGNING_KEY=" + dstKey}
	out, stderr, err = runBinary(t, dir, restoreEnv, "restore", "--in", file)
	if err != nil {
		t.Fatalf("restore: %v\n%s%s", err, out, stderr)
	}
	t.Logf("restore:\n%s", out)
	if got, _ := os.ReadFile(dstKey); len(got) == 0 {
		t.Error("the signing key was not written to --signing-key")
	}

	nc, err := nats.Connect(urls(to))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, name := range []string{events.StreamName, "OBJ_" + events.UsageRollupBucket} {
		s, err := js.Stream(ctx, name)
		if err != nil {
			t.Fatalf("%s after the restore: %v", name, err)
		}
		if info := s.CachedInfo(); info.Config.Replicas != 3 || info.Cluster == nil || len(info.Cluster.Replicas) != 2 {
			t.Errorf("%s restored with %d replicas (%+v), want 3", name, info.Config.Replicas, info.Cluster)
		}
	}
	restoredAudit, _, restoredErr := runBinary(t, dir, env(to, dstKey), "audit", "verify")
	if restoredAudit != audited || (auditErr == nil) != (restoredErr == nil) || !strings.Contains(audited, "intact") {
		t.Errorf("audit verify after the restore: %v %q; before: %v %q", restoredErr, restoredAudit, auditErr, audited)
	}
	addr = freeAddr(t)
	q := serveProcess(t, dir, addr, append(env(to, dstKey), "KEYLEDGER_HTTP_ADDR="+addr))
	before.compare(t, observe(t, q.url, admin, secrets, seq))

	if _, stderr, err := runBinary(t, dir, restoreEnv, "restore", "--in", file); err == nil || !strings.Contains(stderr, "not empty") {
		t.Errorf("a second restore into the cluster: %v %s", err, stderr)
	}
}
