package events

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Checkpoint is a signed statement about the stream: which events, with
// which hashes, it held from FromSeq (exclusive) to ToSeq, and the running
// chain over every event from the first. Listing each event's hash lets an
// audit name the exact event that was removed, altered or reordered;
// PrevCheckpoint chains the checkpoints so that none can be dropped.
type Checkpoint struct {
	Version        int        `json:"version"`
	FromSeq        uint64     `json:"from_seq"`
	ToSeq          uint64     `json:"to_seq"`
	Events         []EventRef `json:"events"`
	Chain          string     `json:"chain"`
	PrevCheckpoint string     `json:"prev_checkpoint"`
	SignedAt       string     `json:"signed_at"`
	KeyID          string     `json:"key_id"`
	Signature      string     `json:"signature"`
}

// EventRef is one event in a checkpoint: its sequence and stored hash.
type EventRef struct {
	Seq  uint64 `json:"seq"`
	Hash string `json:"hash"`
}

// ChainNext extends the running chain by one event:
// SHA-256(previous chain, "\n", seq, "\n", event hash), hex.
func ChainNext(chain string, seq uint64, hash string) string {
	sum := sha256.Sum256([]byte(chain + "\n" + strconv.FormatUint(seq, 10) + "\n" + hash))
	return hex.EncodeToString(sum[:])
}

// signedBytes is what the signature covers: the checkpoint without it.
func (c Checkpoint) signedBytes() []byte {
	c.Signature = ""
	raw, _ := json.Marshal(c)
	return raw
}

// Verify checks the signature with pub.
func (c Checkpoint) Verify(pub ed25519.PublicKey) bool {
	sig, err := base64.StdEncoding.DecodeString(c.Signature)
	return err == nil && ed25519.Verify(pub, c.signedBytes(), sig)
}

// KeyID names a public key: the first 16 hex digits of its SHA-256.
func KeyID(pub ed25519.PublicKey) string {
	sum := sha256.Sum256(pub)
	return hex.EncodeToString(sum[:8])
}

// LoadOrCreateSigningKey reads an Ed25519 private key (PKCS #8 PEM) from
// path, creating it with mode 0600 when missing. A key file its group or
// anyone else may read is refused, as ssh refuses such a key: whoever can
// read it can sign in keyledger's name.
func LoadOrCreateSigningKey(path string) (ed25519.PrivateKey, error) {
	if err := privateFile(path); err != nil {
		return nil, err
	}
	raw, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		_, priv, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			return nil, err
		}
		der, err := x509.MarshalPKCS8PrivateKey(priv)
		if err != nil {
			return nil, err
		}
		f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
		if errors.Is(err, fs.ErrExist) {
			// Another instance sharing the key file made it first.
			time.Sleep(100 * time.Millisecond)
			return LoadOrCreateSigningKey(path)
		}
		if err != nil {
			return nil, err
		}
		defer f.Close()
		if err := pem.Encode(f, &pem.Block{Type: "PRIVATE KEY", Bytes: der}); err != nil {
			return nil, err
		}
		return priv, f.Close()
	}
	if err != nil {
		return nil, err
	}
	block, _ := pem.Decode(raw)
	if block == nil {
		return nil, fmt.Errorf("%s: no PEM block", path)
	}
	key, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	priv, ok := key.(ed25519.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("%s: not an Ed25519 key", path)
	}
	return priv, nil
}

// privateFile refuses a file that exists and that its group or others may
// read or write, saying how to fix it.
func privateFile(path string) error {
	fi, err := os.Stat(path)
	if err != nil {
		return nil // missing: created 0600; unreadable: reading says why
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		abs, _ := filepath.Abs(path)
		return fmt.Errorf("%s may be read by others (mode %04o): a signing key must be private to its owner; run: chmod 600 %s", path, perm, abs)
	}
	return nil
}

// PublicKeyPEM writes pub as a PKIX PEM block.
func PublicKeyPEM(pub ed25519.PublicKey) []byte {
	der, _ := x509.MarshalPKIXPublicKey(pub)
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
}

// ParsePublicKeyPEM reads what PublicKeyPEM wrote.
func ParsePublicKeyPEM(raw []byte) (ed25519.PublicKey, error) {
	block, _ := pem.Decode(raw)
	if block == nil {
		return nil, errors.New("no PEM block")
	}
	key, err := x509.ParsePKIXPublicKey(block.Bytes)
	if err != nil {
		return nil, err
	}
	pub, ok := key.(ed25519.PublicKey)
	if !ok {
		return nil, errors.New("not an Ed25519 public key")
	}
	return pub, nil
}

// Checkpointer appends signed checkpoints. Several instances may run one:
// each append expects the last checkpoint it read, so only one of them
// writes each checkpoint.
type Checkpointer struct {
	Store *Store
	Key   ed25519.PrivateKey
	// Max events per checkpoint (256 when zero).
	Max    int
	Now    func() time.Time
	Logger *slog.Logger
}

var errEnough = errors.New("enough events for one checkpoint")

// lastCheckpoint returns the newest checkpoint, its stream sequence and
// the hash of its body; zero values when there is none.
func (c *Checkpointer) lastCheckpoint(ctx context.Context) (Checkpoint, uint64, string, error) {
	m, err := c.Store.stream.GetLastMsgForSubject(ctx, CheckpointSubject)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return Checkpoint{}, 0, "", nil
	}
	if err != nil {
		return Checkpoint{}, 0, "", err
	}
	var cp Checkpoint
	if err := json.Unmarshal(m.Data, &cp); err != nil {
		return Checkpoint{}, 0, "", fmt.Errorf("checkpoint at seq %d: %w", m.Sequence, err)
	}
	return cp, m.Sequence, BodyHash(m.Data), nil
}

// Once appends one checkpoint over the events since the last one, if there
// are any. It reports whether it wrote one and whether more events wait.
func (c *Checkpointer) Once(ctx context.Context) (wrote, more bool, err error) {
	limit := c.Max
	if limit == 0 {
		limit = 256
	}
	last, lastSeq, lastHash, err := c.lastCheckpoint(ctx)
	if err != nil {
		return false, false, err
	}
	cp := Checkpoint{Version: 1, FromSeq: last.ToSeq, Chain: last.Chain, PrevCheckpoint: lastHash}
	err = c.Store.Scan(ctx, SubjectRoot+".>", last.ToSeq+1, func(m Msg) error {
		if len(cp.Events) == limit {
			more = true
			return errEnough
		}
		h := BodyHash(m.Data)
		cp.Events = append(cp.Events, EventRef{Seq: m.Seq, Hash: h})
		cp.Chain = ChainNext(cp.Chain, m.Seq, h)
		return nil
	})
	if err != nil && !errors.Is(err, errEnough) {
		return false, false, err
	}
	if len(cp.Events) == 0 {
		return false, false, nil
	}
	now := time.Now
	if c.Now != nil {
		now = c.Now
	}
	pub := c.Key.Public().(ed25519.PublicKey)
	cp.ToSeq = cp.Events[len(cp.Events)-1].Seq
	cp.SignedAt = FormatTime(now())
	cp.KeyID = KeyID(pub)
	cp.Signature = base64.StdEncoding.EncodeToString(ed25519.Sign(c.Key, cp.signedBytes()))
	body, _ := json.Marshal(cp)
	_, err = c.Store.js.PublishMsg(ctx, &nats.Msg{Subject: CheckpointSubject, Data: body},
		jetstream.WithMsgID("checkpoint-"+strconv.FormatUint(cp.ToSeq, 10)),
		jetstream.WithExpectLastSequenceForSubject(lastSeq, CheckpointSubject))
	if IsConflict(err) {
		return false, more, nil // another instance wrote it first
	}
	if err != nil {
		return false, more, fmt.Errorf("append checkpoint: %w", err)
	}
	return true, more, nil
}

// Run writes checkpoints every interval until ctx ends, and once more
// then, so that a clean stop leaves every event signed.
func (c *Checkpointer) Run(ctx context.Context, every time.Duration) {
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		c.catchUp(ctx)
		select {
		case <-ctx.Done():
			fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			c.catchUp(fctx)
			cancel()
			return
		case <-tick.C:
		}
	}
}

// catchUp writes checkpoints until none is due, in several when many
// events wait.
func (c *Checkpointer) catchUp(ctx context.Context) {
	for more := true; more && ctx.Err() == nil; {
		var err error
		if _, more, err = c.Once(ctx); err != nil {
			log := c.Logger
			if log == nil {
				log = slog.Default()
			}
			log.Warn("checkpoint not written; will retry", "err", err)
			return
		}
	}
}
