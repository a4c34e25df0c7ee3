// Package backup writes a keyledger deployment to one file and restores
// it into an empty system: the event stream KEYLEDGER and the streams of
// the buckets worth keeping, each as NATS's own stream snapshot, and the
// key files (the signing key, the trust set, the webhook secrets key)
// whose loss would make the rest unreadable or unusable.
//
// The file is a tar archive: each stream's snapshot, the keys, then a
// manifest (what each entry is, its size and SHA-256, the streams' last
// sequences) and the manifest's own SHA-256. A restore reads and checks the
// whole file before it changes anything.
package backup

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
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/keyledger/keyledger/events"
	"github.com/keyledger/keyledger/webhooks"
)

// Part is a stream a backup holds, and why.
type Part struct {
	Stream string
	// Consumers: the snapshot holds the stream's durable consumers and
	// where they are (the webhook endpoints' deliveries on KEYLEDGER).
	Consumers bool
	Why       string
}

// Parts are the streams a backup holds, in the order they are taken. A
// cache is taken before what it caches, so that it never runs ahead of it
// in an online backup: the projections' snapshot before KEYLEDGER, the
// usage rollup before the usage log it names a sequence of. The sealed
// webhook secrets come after KEYLEDGER, so that every endpoint it holds
// finds its secret. Only KEYLEDGER must exist; the others are taken when
// they do.
var Parts = []Part{
	{Stream: events.SnapshotStream, Why: "the projections' newest signed snapshot: a restored start reads it instead of replaying the whole stream"},
	{Stream: "OBJ_" + events.UsageRollupBucket, Why: "every key's last use (last_used_at)"},
	{Stream: events.UsageStream, Why: "the uses not yet rolled up (the last hour)"},
	{Stream: "OBJ_" + events.OutcomeRollupBucket, Why: "every key's verification outcomes and recent callers, rolled up"},
	{Stream: events.OutcomeStream, Why: "the outcome batches after that rollup (and up to 92 days of them)"},
	{Stream: "KV_" + events.UsageBucket, Why: "last uses kept by earlier versions, while the bucket exists"},
	{Stream: events.StreamName, Consumers: true, Why: "every event: the only source of truth, with the webhook endpoints' delivery consumers"},
	{Stream: "KV_" + webhooks.SecretsBucket, Why: "the webhook endpoints' sealed URLs and signing secrets"},
	{Stream: "KV_" + webhooks.StateBucket, Why: "the webhook endpoints' delivery state"},
	{Stream: webhooks.AttemptsStream, Why: "the webhook endpoints' recent delivery attempts"},
}

// LeftOut are the streams of keyledger a backup does not hold: caches of
// at most a day that a restore can do without.
var LeftOut = []Part{
	{Stream: "KV_" + events.IdempotencyBucket, Why: "answers to writes with an Idempotency-Key, for 24 hours: a retry after a restore is executed again"},
	{Stream: "KV_" + events.SessionsBucket, Why: "page sessions: everybody signs in again after a restore"},
	{Stream: "KV_" + events.SignInsBucket, Why: "sign-ins under way, for ten minutes"},
}

// Key roles: the files a backup may hold beside the streams.
const (
	SigningKey        = "signing-key"         // Ed25519 PEM: signs events, checkpoints, snapshots
	EventSigners      = "event-signers"       // PEM of the trusted public keys
	WebhookSecretsKey = "webhook-secrets-key" // AES-256: seals webhook URLs and secrets
)

// Key is a key file a backup holds.
type Key struct {
	Role string
	Data []byte
}

// Format and Version name the file format.
const (
	Format  = "keyledger-backup"
	Version = 1

	manifestName = "manifest.json"
	manifestSum  = "manifest.sha256"
)

// Manifest is the last but one entry of the file: what the others are.
type Manifest struct {
	Format           string        `json:"format"`
	Version          int           `json:"version"`
	KeyledgerVersion string        `json:"keyledger_version"`
	CreatedAt        time.Time     `json:"created_at"`
	Streams          []StreamEntry `json:"streams"`
	Keys             []KeyEntry    `json:"keys"`
	LeftOut          []string      `json:"left_out"`
}

// StreamEntry is one stream's snapshot in the file.
type StreamEntry struct {
	Name      string `json:"name"`
	File      string `json:"file"`
	Size      int64  `json:"size"`
	SHA256    string `json:"sha256"`
	Messages  uint64 `json:"messages"`
	FirstSeq  uint64 `json:"first_seq"`
	LastSeq   uint64 `json:"last_seq"`
	Consumers int    `json:"consumers"`
	Replicas  int    `json:"replicas"`
	Taken
}

// KeyEntry is one key file in the file; its bytes are not in the manifest.
type KeyEntry struct {
	Role   string `json:"role"`
	File   string `json:"file"`
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"`
}

// Options are what Write needs besides the connection.
type Options struct {
	KeyledgerVersion string
	Keys             []Key
	// Progress, when set, is told of each stream once it is in the file.
	Progress func(StreamEntry)
}

// Write takes every Part that exists and the keys, and writes them to
// path, mode 0600: it holds private keys. The file appears whole or not
// at all (written beside it, then renamed).
func Write(ctx context.Context, nc *nats.Conn, path string, o Options) (*Manifest, error) {
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, err
	}
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, ".keyledger-backup-*")
	if err != nil {
		return nil, err
	}
	defer os.Remove(f.Name()) // after the rename, there is nothing there
	defer f.Close()
	if err := f.Chmod(0o600); err != nil {
		return nil, err
	}
	m := &Manifest{Format: Format, Version: Version, KeyledgerVersion: o.KeyledgerVersion, CreatedAt: time.Now().UTC()}
	for _, p := range LeftOut {
		m.LeftOut = append(m.LeftOut, p.Stream)
	}
	tw := tar.NewWriter(f)
	for _, p := range Parts {
		_, err := js.Stream(ctx, p.Stream)
		if errors.Is(err, jetstream.ErrStreamNotFound) {
			if p.Stream == events.StreamName {
				return nil, fmt.Errorf("there is no stream %s here: nothing to back up (is this the right --data-dir or --nats-url?)", events.StreamName)
			}
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("stream %s: %w", p.Stream, err)
		}
		e, err := writeStream(ctx, nc, tw, dir, p)
		if err != nil {
			return nil, err
		}
		m.Streams = append(m.Streams, e)
		if o.Progress != nil {
			o.Progress(e)
		}
	}
	for _, k := range o.Keys {
		e := KeyEntry{Role: k.Role, File: "keys/" + k.Role, Size: int64(len(k.Data)), SHA256: sum(k.Data)}
		if err := writeEntry(tw, e.File, e.Size, m.CreatedAt, bytes.NewReader(k.Data)); err != nil {
			return nil, err
		}
		m.Keys = append(m.Keys, e)
	}
	raw, _ := json.MarshalIndent(m, "", "  ")
	if err := writeEntry(tw, manifestName, int64(len(raw)), m.CreatedAt, bytes.NewReader(raw)); err != nil {
		return nil, err
	}
	s := []byte(sum(raw) + "\n")
	if err := writeEntry(tw, manifestSum, int64(len(s)), m.CreatedAt, bytes.NewReader(s)); err != nil {
		return nil, err
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	if err := f.Sync(); err != nil {
		return nil, err
	}
	if err := f.Close(); err != nil {
		return nil, err
	}
	if err := os.Rename(f.Name(), path); err != nil {
		return nil, err
	}
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		d.Close()
	}
	return m, nil
}

// writeStream takes p's snapshot into a file beside the backup (a tar
// entry states its size first), then copies it in.
func writeStream(ctx context.Context, nc *nats.Conn, tw *tar.Writer, dir string, p Part) (StreamEntry, error) {
	spool, err := os.CreateTemp(dir, ".keyledger-snapshot-*")
	if err != nil {
		return StreamEntry{}, err
	}
	defer os.Remove(spool.Name())
	defer spool.Close()
	var taken Taken
	// A snapshot taken while the service runs fails when a consumer it
	// lists goes away before it is read (an ephemeral one): take it again.
	for attempt := 1; ; attempt++ {
		if _, err := spool.Seek(0, io.SeekStart); err != nil {
			return StreamEntry{}, err
		}
		if err := spool.Truncate(0); err != nil {
			return StreamEntry{}, err
		}
		taken, err = snapshot(ctx, nc, p.Stream, p.Consumers, spool)
		if err == nil || attempt == 3 || ctx.Err() != nil {
			break
		}
	}
	if err != nil {
		return StreamEntry{}, err
	}
	size, err := spool.Seek(0, io.SeekCurrent)
	if err != nil {
		return StreamEntry{}, err
	}
	if _, err := spool.Seek(0, io.SeekStart); err != nil {
		return StreamEntry{}, err
	}
	h := sha256.New()
	e := StreamEntry{Name: p.Stream, File: "streams/" + p.Stream + ".snapshot", Size: size, Taken: taken}
	if err := writeEntry(tw, e.File, size, time.Now(), io.TeeReader(spool, h)); err != nil {
		return StreamEntry{}, err
	}
	e.SHA256 = hex.EncodeToString(h.Sum(nil))
	e.describe()
	return e, nil
}

// describe fills the entry's figures from the config and state it holds.
func (e *StreamEntry) describe() {
	var state struct {
		Msgs      uint64 `json:"messages"`
		FirstSeq  uint64 `json:"first_seq"`
		LastSeq   uint64 `json:"last_seq"`
		Consumers int    `json:"consumer_count"`
	}
	var cfg struct {
		Replicas int `json:"num_replicas"`
	}
	_ = json.Unmarshal(e.State, &state)
	_ = json.Unmarshal(e.Config, &cfg)
	e.Messages, e.FirstSeq, e.LastSeq, e.Consumers, e.Replicas = state.Msgs, state.FirstSeq, state.LastSeq, state.Consumers, max(cfg.Replicas, 1)
}

func writeEntry(tw *tar.Writer, name string, size int64, at time.Time, r io.Reader) error {
	if err := tw.WriteHeader(&tar.Header{Name: name, Size: size, Mode: 0o600, ModTime: at, Typeflag: tar.TypeReg, Format: tar.FormatPAX}); err != nil {
		return err
	}
	n, err := io.Copy(tw, r)
	if err != nil {
		return err
	}
	if n != size {
		return fmt.Errorf("%s: wrote %d bytes of %d", name, n, size)
	}
	return nil
}

func sum(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}
