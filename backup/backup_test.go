package backup_test

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/keyledger/keyledger/backup"
	"github.com/keyledger/keyledger/events"
	"github.com/keyledger/keyledger/events/natsembed"
	"github.com/keyledger/keyledger/internal/natstest"
	"github.com/keyledger/keyledger/webhooks"
)

// source is a store with events, a durable consumer part-way through
// them, a webhook secrets bucket and an idempotency bucket.
func source(t *testing.T) *natstest.Env {
	t.Helper()
	env := natstest.Start(t)
	ctx := context.Background()
	for i := range 50 {
		if _, err := env.JS.Publish(ctx, fmt.Sprintf("%s.acme.key_%02d.created", events.SubjectRoot, i), []byte(fmt.Sprintf(`{"n":%d}`, i))); err != nil {
			t.Fatal(err)
		}
	}
	cons, err := env.JS.CreateOrUpdateConsumer(ctx, events.StreamName, jetstream.ConsumerConfig{Durable: "webhook", AckPolicy: jetstream.AckExplicitPolicy})
	if err != nil {
		t.Fatal(err)
	}
	batch, err := cons.Fetch(20)
	if err != nil {
		t.Fatal(err)
	}
	for m := range batch.Messages() {
		if err := m.DoubleAck(ctx); err != nil {
			t.Fatal(err)
		}
	}
	kv, err := env.JS.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: webhooks.SecretsBucket})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(ctx, "wh_1.s1", []byte("sealed")); err != nil {
		t.Fatal(err)
	}
	if _, err := events.OpenIdempotency(ctx, env.JS, 1); err != nil {
		t.Fatal(err)
	}
	return env
}

// empty is an embedded server on a fresh directory with nothing on it.
func empty(t *testing.T) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	emb, err := natsembed.Start(natsembed.Config{Dir: t.TempDir(), Logger: natstest.Quiet()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(emb.Close)
	js, _ := jetstream.New(emb.Conn)
	return emb.Conn, js
}

func write(t *testing.T, env *natstest.Env) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "keyledger.backup")
	keys := []backup.Key{{Role: backup.SigningKey, Data: []byte("-----BEGIN PRIVATE KEY-----\n")}}
	if _, err := backup.Write(context.Background(), env.Embedded.Conn, path, backup.Options{KeyledgerVersion: "test", Keys: keys}); err != nil {
		t.Fatalf("backup: %v", err)
	}
	return path
}

func TestRoundTripKeepsEveryMessageTheConsumerAndTheBuckets(t *testing.T) {
	env := source(t)
	path := write(t, env)
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("backup file: %v %v, want mode 0600", fi.Mode(), err)
	}
	a, err := backup.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := string(a.Key(backup.SigningKey)); got != "-----BEGIN PRIVATE KEY-----\n" {
		t.Errorf("signing key %q", got)
	}
	nc, js := empty(t)
	ctx := context.Background()
	if err := a.Restore(ctx, nc, backup.RestoreOptions{Replicas: 1}); err != nil {
		t.Fatalf("restore: %v", err)
	}
	for _, name := range []string{events.StreamName, "KV_" + webhooks.SecretsBucket} {
		was, _ := env.JS.Stream(ctx, name)
		is, err := js.Stream(ctx, name)
		if err != nil {
			t.Fatalf("%s not restored: %v", name, err)
		}
		w, i := was.CachedInfo().State, is.CachedInfo().State
		if w.Msgs != i.Msgs || w.LastSeq != i.LastSeq || w.Bytes != i.Bytes {
			t.Errorf("%s: restored %d messages, last %d, %d bytes; was %d, %d, %d", name, i.Msgs, i.LastSeq, i.Bytes, w.Msgs, w.LastSeq, w.Bytes)
		}
	}
	for seq := uint64(1); seq <= 50; seq++ {
		was, _ := env.JS.Stream(ctx, events.StreamName)
		is, _ := js.Stream(ctx, events.StreamName)
		a, _ := was.GetMsg(ctx, seq)
		b, err := is.GetMsg(ctx, seq)
		if err != nil || a.Subject != b.Subject || !bytes.Equal(a.Data, b.Data) {
			t.Fatalf("message %d: %v %v, was %v", seq, b, err, a)
		}
	}
	cons, err := js.Consumer(ctx, events.StreamName, "webhook")
	if err != nil {
		t.Fatalf("the durable consumer was not restored: %v", err)
	}
	if got := cons.CachedInfo().AckFloor.Stream; got != 20 {
		t.Errorf("consumer ack floor %d, want 20", got)
	}
	kv, err := js.KeyValue(ctx, webhooks.SecretsBucket)
	if err != nil {
		t.Fatal(err)
	}
	if e, err := kv.Get(ctx, "wh_1.s1"); err != nil || string(e.Value()) != "sealed" {
		t.Errorf("webhook secret: %v %v", e, err)
	}
	if _, err := js.KeyValue(ctx, events.IdempotencyBucket); !errors.Is(err, jetstream.ErrBucketNotFound) {
		t.Errorf("the idempotency bucket is in the backup: %v", err)
	}
}

func TestRestoreRefusesANonEmptySystem(t *testing.T) {
	env := source(t)
	a, err := backup.Open(write(t, env))
	if err != nil {
		t.Fatal(err)
	}
	before := env.LastSeq(t)
	err = a.Restore(context.Background(), env.Embedded.Conn, backup.RestoreOptions{})
	if !errors.Is(err, backup.ErrNotEmpty) || !strings.Contains(err.Error(), events.StreamName) {
		t.Fatalf("restore into the source: %v, want ErrNotEmpty naming %s", err, events.StreamName)
	}
	if got := env.LastSeq(t); got != before {
		t.Errorf("last sequence %d after a refused restore, was %d", got, before)
	}
}

func TestOpenRefusesADamagedFile(t *testing.T) {
	path := write(t, source(t))
	good, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	flip := func(at int) []byte {
		b := bytes.Clone(good)
		b[at] ^= 0x40
		return b
	}
	manifest := bytes.Index(good, []byte(`"format"`))
	for _, tc := range []struct {
		name string
		data []byte
	}{
		{"Empty", nil},
		{"NotATar", []byte("hello, this is not a backup\n")},
		{"TruncatedInTheFirstEntry", good[:3000]},
		{"TruncatedBeforeTheManifest", good[:manifest-600]},
		{"TruncatedAtTheEnd", good[:len(good)-1500]},
		{"AByteOfASnapshotChanged", flip(1024 + 100)},
		{"AByteOfTheManifestChanged", flip(manifest + 2)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			bad := filepath.Join(t.TempDir(), "bad.backup")
			if err := os.WriteFile(bad, tc.data, 0o600); err != nil {
				t.Fatal(err)
			}
			if _, err := backup.Open(bad); !errors.Is(err, backup.ErrDamaged) {
				t.Errorf("Open: %v, want ErrDamaged", err)
			}
		})
	}
}

// rewrite makes a consistent archive from the one at path, its entries
// changed by change, and the manifest made to match them.
func rewrite(t *testing.T, path string, change func(name string, data []byte) []byte) string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var names []string
	data := map[string][]byte{}
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(tr)
		names = append(names, h.Name)
		data[h.Name] = change(h.Name, b)
	}
	var m map[string]json.RawMessage
	_ = json.Unmarshal(data["manifest.json"], &m)
	var streams []map[string]any
	_ = json.Unmarshal(m["streams"], &streams)
	for _, s := range streams {
		b := data[s["file"].(string)]
		sum := sha256.Sum256(b)
		s["size"], s["sha256"] = len(b), hex.EncodeToString(sum[:])
	}
	m["streams"], _ = json.Marshal(streams)
	data["manifest.json"], _ = json.Marshal(m)
	sum := sha256.Sum256(data["manifest.json"])
	data["manifest.sha256"] = []byte(hex.EncodeToString(sum[:]) + "\n")
	out := filepath.Join(t.TempDir(), "rewritten.backup")
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, n := range names {
		_ = tw.WriteHeader(&tar.Header{Name: n, Size: int64(len(data[n])), Mode: 0o600, ModTime: time.Now()})
		_, _ = tw.Write(data[n])
	}
	_ = tw.Close()
	if err := os.WriteFile(out, buf.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	return out
}

// TestAFailedRestoreLeavesTheSystemEmpty restores a file whose KEYLEDGER
// snapshot NATS refuses (its checksums agree: it was written so): the
// buckets restored before it are deleted again.
func TestAFailedRestoreLeavesTheSystemEmpty(t *testing.T) {
	path := rewrite(t, write(t, source(t)), func(name string, b []byte) []byte {
		if name == "streams/"+events.StreamName+".snapshot" {
			return bytes.Repeat([]byte("not a snapshot "), 100)
		}
		return b
	})
	a, err := backup.Open(path)
	if err != nil {
		t.Fatalf("Open of the rewritten file: %v", err)
	}
	nc, js := empty(t)
	ctx := context.Background()
	if err := a.Restore(ctx, nc, backup.RestoreOptions{Replicas: 1}); err == nil || !strings.Contains(err.Error(), events.StreamName) {
		t.Fatalf("restore of a bad snapshot: %v, want an error naming %s", err, events.StreamName)
	}
	for names := js.StreamNames(ctx); ; {
		select {
		case name, ok := <-names.Name():
			if !ok {
				return
			}
			t.Errorf("stream %s left behind by a failed restore", name)
		case <-time.After(10 * time.Second):
			t.Fatal("listing streams took 10 s")
		}
	}
}
