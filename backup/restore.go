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
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/keyledger/keyledger/events"
)

// ErrDamaged is the error of a backup file that is truncated, corrupted
// or not a backup at all.
var ErrDamaged = errors.New("the backup file is damaged")

// ErrNotEmpty is the error of a restore into a system that already holds
// some of the streams.
var ErrNotEmpty = errors.New("the system is not empty")

// maxSmall bounds what Open holds of the entries outside streams/ (the
// manifest and the keys) together.
const maxSmall = 4 << 20

// Archive is a backup file that was read whole and found intact.
type Archive struct {
	Path     string
	Manifest Manifest
	Keys     []Key
}

// Open reads the whole file at path and checks it against its manifest:
// every entry there, of its size and SHA-256, nothing else, and the
// manifest's own SHA-256. Nothing is changed anywhere.
func Open(path string) (*Archive, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	damaged := func(format string, a ...any) error {
		return fmt.Errorf("%w: %s: %s", ErrDamaged, path, fmt.Sprintf(format, a...))
	}
	type seen struct {
		size int64
		sum  string
	}
	entries := map[string]seen{}
	small := map[string][]byte{} // the manifest and the keys
	var smallBytes int64
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, damaged("after %d entries: %v (truncated, or not a keyledger backup)", len(entries), err)
		}
		if _, dup := entries[h.Name]; dup {
			return nil, damaged("entry %s twice", h.Name)
		}
		sh := sha256.New()
		var w io.Writer = sh
		var buf bytes.Buffer
		if !strings.HasPrefix(h.Name, "streams/") {
			// Held until the manifest says which are keys: a few
			// kilobytes in a real backup, bounded in all, not only each.
			if smallBytes += h.Size; h.Size > 1<<20 || smallBytes > maxSmall {
				return nil, damaged("entry %s of %d bytes (%d bytes outside streams/ in all, at most %d)", h.Name, h.Size, smallBytes, maxSmall)
			}
			buf.Grow(int(h.Size))
			w = io.MultiWriter(sh, &buf)
		}
		n, err := io.Copy(w, tr)
		if err != nil {
			return nil, damaged("entry %s: %v (truncated)", h.Name, err)
		}
		entries[h.Name] = seen{n, hex.EncodeToString(sh.Sum(nil))}
		if buf.Len() > 0 {
			small[h.Name] = buf.Bytes()
		}
	}
	raw, ok := small[manifestName]
	if !ok {
		return nil, damaged("no %s (truncated, or not a keyledger backup)", manifestName)
	}
	if want := strings.TrimSpace(string(small[manifestSum])); want != sum(raw) {
		return nil, damaged("%s does not match %s", manifestName, manifestSum)
	}
	a := &Archive{Path: path}
	if err := json.Unmarshal(raw, &a.Manifest); err != nil {
		return nil, damaged("%s: %v", manifestName, err)
	}
	m := &a.Manifest
	if m.Format != Format {
		return nil, damaged("format %q, not %q", m.Format, Format)
	}
	if m.Version != Version {
		return nil, fmt.Errorf("%s: backup format version %d; this keyledger reads version %d", path, m.Version, Version)
	}
	want := map[string]seen{manifestName: entries[manifestName], manifestSum: entries[manifestSum]}
	for _, s := range m.Streams {
		want[s.File] = seen{s.Size, s.SHA256}
	}
	for _, k := range m.Keys {
		want[k.File] = seen{k.Size, k.SHA256}
		a.Keys = append(a.Keys, Key{Role: k.Role, Data: small[k.File]})
	}
	for name, w := range want {
		got, ok := entries[name]
		switch {
		case !ok:
			return nil, damaged("entry %s is missing", name)
		case got.size != w.size:
			return nil, damaged("entry %s has %d bytes, the manifest says %d", name, got.size, w.size)
		case got.sum != w.sum:
			return nil, damaged("entry %s does not match its SHA-256 in the manifest", name)
		}
	}
	for name := range entries {
		if _, ok := want[name]; !ok {
			return nil, damaged("entry %s is not in the manifest", name)
		}
	}
	if !slices.ContainsFunc(m.Streams, func(s StreamEntry) bool { return s.Name == events.StreamName }) {
		return nil, damaged("it holds no stream %s", events.StreamName)
	}
	return a, nil
}

// Key returns the key file of role, or nil.
func (a *Archive) Key(role string) []byte {
	for _, k := range a.Keys {
		if k.Role == role {
			return k.Data
		}
	}
	return nil
}

// RestoreOptions say how the streams come back.
type RestoreOptions struct {
	// Replicas, when not zero, replaces every stream's replicas (the
	// embedded server holds 1; a cluster restore may raise them).
	Replicas int
	// Progress, when set, is told of each stream once it is restored.
	Progress func(StreamEntry)
}

// Existing lists the streams of the backup (and KEYLEDGER) that the
// system already has.
func (a *Archive) Existing(ctx context.Context, js jetstream.JetStream) ([]string, error) {
	names := []string{events.StreamName}
	for _, s := range a.Manifest.Streams {
		if s.Name != events.StreamName {
			names = append(names, s.Name)
		}
	}
	var have []string
	for _, name := range names {
		_, err := js.Stream(ctx, name)
		if errors.Is(err, jetstream.ErrStreamNotFound) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("stream %s: %w", name, err)
		}
		have = append(have, name)
	}
	return have, nil
}

// Restore creates every stream of the backup, KEYLEDGER last, into a
// system that has none of them (ErrNotEmpty otherwise). When one fails,
// those it had created are deleted again, so that the system is left as
// empty as it was.
func (a *Archive) Restore(ctx context.Context, nc *nats.Conn, o RestoreOptions) error {
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	have, err := a.Existing(ctx, js)
	if err != nil {
		return err
	}
	if len(have) > 0 {
		return fmt.Errorf("%w: it already has the stream(s) %s; a restore goes only into a system no keyledger has run on (a new --data-dir, or a cluster without these streams)",
			ErrNotEmpty, strings.Join(have, ", "))
	}
	order := slices.Clone(a.Manifest.Streams)
	slices.SortStableFunc(order, func(x, y StreamEntry) int {
		return boolInt(x.Name == events.StreamName) - boolInt(y.Name == events.StreamName)
	})
	var made []string
	for _, s := range order {
		if err := a.restoreStream(ctx, nc, s, o.Replicas); err != nil {
			for _, name := range made {
				// A fresh context: ctx may be what ended the restore.
				dctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				if derr := js.DeleteStream(dctx, name); derr != nil && !errors.Is(derr, jetstream.ErrStreamNotFound) {
					err = fmt.Errorf("%w; and the stream %s it had restored could not be deleted again: %v", err, name, derr)
				}
				cancel()
			}
			return err
		}
		made = append(made, s.Name)
		if o.Progress != nil {
			o.Progress(s)
		}
	}
	return nil
}

// restoreStream sends one stream's snapshot, read again from the file and
// checked again as it goes.
func (a *Archive) restoreStream(ctx context.Context, nc *nats.Conn, s StreamEntry, replicas int) error {
	f, err := os.Open(a.Path)
	if err != nil {
		return err
	}
	defer f.Close()
	tr := tar.NewReader(f) // skips other entries by seeking
	for {
		h, err := tr.Next()
		if err != nil {
			return fmt.Errorf("%w: %s: entry %s: %v", ErrDamaged, a.Path, s.File, err)
		}
		if h.Name == s.File {
			break
		}
	}
	taken := s.Taken
	if replicas > 0 {
		if taken.Config, err = withReplicas(taken.Config, replicas); err != nil {
			return fmt.Errorf("stream %s: %w", s.Name, err)
		}
	}
	h := sha256.New()
	if err := restore(ctx, nc, s.Name, taken, io.TeeReader(tr, h)); err != nil {
		return err
	}
	if hex.EncodeToString(h.Sum(nil)) != s.SHA256 {
		return fmt.Errorf("%w: %s: entry %s changed while it was restored", ErrDamaged, a.Path, s.File)
	}
	return nil
}

// withReplicas sets a stream config's num_replicas, keeping every other
// field as the server wrote it.
func withReplicas(config json.RawMessage, n int) (json.RawMessage, error) {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(config, &m); err != nil {
		return nil, err
	}
	m["num_replicas"] = json.RawMessage(fmt.Sprint(n))
	return json.Marshal(m)
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}
