package events

import (
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Checkpoint is a signed statement about the stream: which events it held
// from FromSeq (exclusive) to ToSeq, with the SHA-256 of each as stored;
// which of them no trusted keyledger instance signed (Untrusted); the
// running chain over every event from the first; and the hash of the
// checkpoint before it, so that none can be dropped. Listing each event's
// hash lets an audit name the exact event that was removed, altered or
// reordered, and lets a replay accept an event by comparing its hash
// instead of checking its signature.
//
// Version 2, written now, lists the events compactly (Seqs as ranges,
// Hashes as one base64 string of 32-byte hashes in order) and is signed
// like an event: Ed25519 over CheckpointSigningPrefix and the body, in the
// SignerHeader and SignatureHeader of the message. Version 1, written by
// earlier releases, lists Events and carries its Signature in the body;
// it is still read and checked.
type Checkpoint struct {
	Version   int         `json:"version"`
	FromSeq   uint64      `json:"from_seq"`
	ToSeq     uint64      `json:"to_seq"`
	Seqs      [][2]uint64 `json:"seqs"`
	Hashes    string      `json:"hashes"`
	Untrusted []uint64    `json:"untrusted"`
	Chain     string      `json:"chain"`
	// PrevCheckpoint is the SHA-256 (hex) of the previous checkpoint's
	// body; "" for the first.
	PrevCheckpoint string `json:"prev_checkpoint"`
	SignedAt       string `json:"signed_at"`
	KeyID          string `json:"key_id"`
}

// CheckpointSigningPrefix opens the signed bytes of a version 2 checkpoint.
const CheckpointSigningPrefix = "keyledger-checkpoint-v2\n"

// checkpointV1 is a checkpoint as earlier releases wrote it; its fields,
// names and order are those it was signed with.
type checkpointV1 struct {
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

// KeyID names a public key: the first 16 hex digits of its SHA-256.
func KeyID(pub ed25519.PublicKey) string {
	sum := sha256.Sum256(pub)
	return hex.EncodeToString(sum[:8])
}

// signedCheckpoint is a checkpoint message a trusted signer wrote, read
// back and checked: what it vouches for, and where it stands.
type signedCheckpoint struct {
	Seq       uint64 // of the message in the stream
	Hash      string // of its body: what the next one's PrevCheckpoint names
	Version   int
	FromSeq   uint64
	ToSeq     uint64
	Chain     string
	Prev      string
	KeyID     string
	SignedAt  string
	seqs      []uint64 // ascending
	hashes    []byte   // 32 bytes per entry of seqs
	untrusted []uint64 // ascending
}

// Head is where the signed record ends: the newest checkpoint a trusted
// signer wrote. An auditor who keeps it outside the system can later tell
// whether the stream still holds it (audit verify --anchor).
type Head struct {
	Seq     uint64 `json:"seq"`    // of the checkpoint message
	ToSeq   uint64 `json:"to_seq"` // the last event it covers
	Chain   string `json:"chain"`  // the running chain up to ToSeq
	Hash    string `json:"hash"`   // of the checkpoint's body
	KeyID   string `json:"key_id"` // who signed it
	Signed  string `json:"signed_at"`
	Version int    `json:"version"`
}

func (c *signedCheckpoint) head() Head {
	return Head{Seq: c.Seq, ToSeq: c.ToSeq, Chain: c.Chain, Hash: c.Hash, KeyID: c.KeyID, Signed: c.SignedAt, Version: c.Version}
}

// lookup finds the event at seq in the checkpoint's list: its stored hash
// and whether the checkpoint marks it untrusted; listed is false when the
// checkpoint does not name seq.
func (c *signedCheckpoint) lookup(seq uint64) (hash []byte, untrusted, listed bool) {
	i, ok := slices.BinarySearch(c.seqs, seq)
	if !ok {
		return nil, false, false
	}
	_, untrusted = slices.BinarySearch(c.untrusted, seq)
	return c.hashes[32*i : 32*i+32], untrusted, true
}

// refs lists the events the checkpoint names, as an audit compares them.
func (c *signedCheckpoint) refs() []EventRef {
	refs := make([]EventRef, len(c.seqs))
	for i, seq := range c.seqs {
		refs[i] = EventRef{Seq: seq, Hash: hex.EncodeToString(c.hashes[32*i : 32*i+32])}
	}
	return refs
}

// errNotSigned is the answer about a checkpoint message no trusted signer
// wrote: junk, a forgery, or one signed by a key the trust set lacks.
var errNotSigned = errors.New("not signed by a trusted keyledger instance")

// readCheckpoint checks and reads a message of the checkpoint subject.
// Returns errNotSigned (wrapped) for one that does not count.
func readCheckpoint(m Msg, set *Signers) (*signedCheckpoint, error) {
	if headerValue(m.Header, SignerHeader) != "" {
		// Signed in its headers: version 2, whose body is read only once
		// its signature holds.
		return readCheckpointV2(m, set)
	}
	var probe struct {
		Version int `json:"version"`
	}
	if err := json.Unmarshal(m.Data, &probe); err != nil {
		return nil, fmt.Errorf("%w: it cannot be read", errNotSigned)
	}
	switch probe.Version {
	case 1:
		return readCheckpointV1(m, set)
	case 2:
		return readCheckpointV2(m, set)
	}
	return nil, fmt.Errorf("%w: version %d is not one keyledger writes", errNotSigned, probe.Version)
}

func readCheckpointV2(m Msg, set *Signers) (*signedCheckpoint, error) {
	signer, sig := headerValue(m.Header, SignerHeader), headerValue(m.Header, SignatureHeader)
	raw, err := base64.StdEncoding.DecodeString(sig)
	if signer == "" || err != nil {
		return nil, fmt.Errorf("%w: it carries no signature", errNotSigned)
	}
	msg := append([]byte(CheckpointSigningPrefix), m.Data...)
	if !set.verify(signer, m.Seq, msg, raw) {
		return nil, fmt.Errorf("%w: its signature by %s does not verify with the trust set", errNotSigned, signer)
	}
	cp, ok := decodeCheckpointFast(m.Data)
	if !ok {
		cp = Checkpoint{} // nothing of what the fast path read
		if err := json.Unmarshal(m.Data, &cp); err != nil {
			return nil, fmt.Errorf("%w: it cannot be read", errNotSigned)
		}
	}
	if cp.Version != 2 {
		return nil, fmt.Errorf("%w: version %d is not one keyledger writes", errNotSigned, cp.Version)
	}
	c := &signedCheckpoint{Seq: m.Seq, Hash: BodyHash(m.Data), Version: 2, FromSeq: cp.FromSeq, ToSeq: cp.ToSeq,
		Chain: cp.Chain, Prev: cp.PrevCheckpoint, KeyID: signer, SignedAt: cp.SignedAt, untrusted: cp.Untrusted}
	if c.hashes, err = base64.StdEncoding.DecodeString(cp.Hashes); err != nil {
		return nil, fmt.Errorf("checkpoint at seq %d: hashes: %w", m.Seq, err)
	}
	for _, r := range cp.Seqs {
		for seq := r[0]; seq <= r[1] && r[0] <= r[1]; seq++ {
			c.seqs = append(c.seqs, seq)
		}
	}
	if len(c.hashes) != 32*len(c.seqs) || !slices.IsSorted(c.seqs) || !slices.IsSorted(c.untrusted) {
		return nil, fmt.Errorf("checkpoint at seq %d: its list of events is malformed", m.Seq)
	}
	return c, nil
}

func readCheckpointV1(m Msg, set *Signers) (*signedCheckpoint, error) {
	var cp checkpointV1
	if err := json.Unmarshal(m.Data, &cp); err != nil {
		return nil, fmt.Errorf("%w: it cannot be read", errNotSigned)
	}
	sig, err := base64.StdEncoding.DecodeString(cp.Signature)
	signed := cp
	signed.Signature = ""
	body, _ := json.Marshal(signed)
	if err != nil || !set.verify(cp.KeyID, m.Seq, body, sig) {
		return nil, fmt.Errorf("%w: its signature by %s does not verify with the trust set", errNotSigned, cp.KeyID)
	}
	c := &signedCheckpoint{Seq: m.Seq, Hash: BodyHash(m.Data), Version: 1, FromSeq: cp.FromSeq, ToSeq: cp.ToSeq,
		Chain: cp.Chain, Prev: cp.PrevCheckpoint, KeyID: cp.KeyID, SignedAt: cp.SignedAt}
	for _, r := range cp.Events {
		h, err := hex.DecodeString(r.Hash)
		if err != nil || len(h) != 32 || len(c.seqs) > 0 && r.Seq <= c.seqs[len(c.seqs)-1] {
			return nil, fmt.Errorf("checkpoint at seq %d: its list of events is malformed", m.Seq)
		}
		c.seqs = append(c.seqs, r.Seq)
		c.hashes = append(c.hashes, h...)
	}
	return c, nil
}

// Checkpointer appends signed checkpoints. Several instances may run one.
// The checkpoints form a chain (see checkpointChain); the checkpointer
// extends its last link. Anything else on the subject — junk, forgeries,
// copies of links — is skipped and counted, and never stops it. Each
// append expects the subject's last message, so that instances seldom
// write the same checkpoint twice; when what came in between is not a
// link, it is tried again, and at last appended without that expectation.
// Beside a feed (Store.Follow, as serve runs it), the chain is followed by
// the feed, which reads every message anyway: however much junk is
// published, finding the last link costs nothing more.
type Checkpointer struct {
	Store *Store
	// Max events per checkpoint (DefaultCheckpointMax when zero).
	Max    int
	Now    func() time.Time
	Logger *slog.Logger

	mu       sync.Mutex
	cached   *signedCheckpoint // Head's answer while the subject ends at cachedAt
	cachedAt uint64
	// quietFrom is where an event after the link quietAfter (its hash)
	// can be at the earliest: a scan from the link found none before. The
	// scan of every event reads the checkpoint subject's messages too
	// (direct.go), junk included; without this, each Once over no event
	// read all the junk since the link again.
	quietFrom  uint64
	quietAfter string
}

// DefaultCheckpointMax is how many events one checkpoint lists at most:
// its body stays near 180 KB, well under NATS's default 1 MB payload.
const DefaultCheckpointMax = 4096

// Rejected counts the messages on the checkpoint subject that are no
// checkpoint of keyledger's: junk, forgeries, copies of links.
func (c *Checkpointer) Rejected() uint64 { return c.Store.chain.rejected.Load() }

func (c *Checkpointer) log() *slog.Logger {
	if c.Logger == nil {
		return c.Store.log
	}
	return c.Logger
}

// Head returns the chain's last link, the newest signed checkpoint; ok is
// false when there is none. Anyone may ask: unless the subject has grown
// since the last answer, it costs one look at the subject's last message.
func (c *Checkpointer) Head(ctx context.Context) (Head, bool, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	m, found, err := c.Store.lastFor(ctx, CheckpointSubject)
	switch {
	case err != nil:
		return Head{}, false, err
	case !found:
		return Head{}, false, nil
	case m.Seq != c.cachedAt:
		last, err := c.Store.chainHead(ctx, m.Seq)
		if err != nil {
			return Head{}, false, err
		}
		c.cached, c.cachedAt = last, m.Seq
	}
	if c.cached == nil {
		return Head{}, false, nil
	}
	return c.cached.head(), true, nil
}

// head returns the chain's last link (nil: none) and the sequence of the
// subject's last message, whatever it is: what the next append expects.
func (c *Checkpointer) head(ctx context.Context) (*signedCheckpoint, uint64, error) {
	m, found, err := c.Store.lastFor(ctx, CheckpointSubject)
	if err != nil || !found {
		return nil, 0, err
	}
	last, err := c.Store.chainHead(ctx, m.Seq)
	return last, m.Seq, err
}

// Once appends one checkpoint over the events since the chain's last
// link, if there are any. It reports whether it wrote one and whether
// more events wait.
func (c *Checkpointer) Once(ctx context.Context) (wrote, more bool, err error) {
	signer := c.Store.Signer()
	if signer == nil {
		return false, false, errors.New("no signing key")
	}
	limit := c.Max
	if limit == 0 {
		limit = DefaultCheckpointMax
	}
	prev, lastSeq, err := c.head(ctx)
	if err != nil {
		return false, false, err
	}
	cp := Checkpoint{Version: 2}
	if prev != nil {
		cp.FromSeq, cp.Chain, cp.PrevCheckpoint = prev.ToSeq, prev.Chain, prev.Hash
	}
	var hashes []byte
	n := 0
	from := cp.FromSeq + 1
	c.mu.Lock()
	if c.quietAfter == cp.PrevCheckpoint {
		from = max(from, c.quietFrom)
	}
	c.mu.Unlock()
	err = c.Store.Scan(ctx, SubjectRoot+".>", from, func(m Msg) error {
		if n == limit || c.Store.unjudged(m.Seq) {
			more = n == limit // an event the projections have not judged waits for the next
			return errEnough
		}
		n++
		sum := sha256.Sum256(m.Data)
		h := hex.EncodeToString(sum[:])
		if k := len(cp.Seqs); k > 0 && cp.Seqs[k-1][1]+1 == m.Seq {
			cp.Seqs[k-1][1] = m.Seq
		} else {
			cp.Seqs = append(cp.Seqs, [2]uint64{m.Seq, m.Seq})
		}
		hashes = append(hashes, sum[:]...)
		if !c.Store.trusted(m, h) {
			cp.Untrusted = append(cp.Untrusted, m.Seq)
		}
		cp.Chain = ChainNext(cp.Chain, m.Seq, h)
		cp.ToSeq = m.Seq
		return nil
	})
	if err != nil && !errors.Is(err, errEnough) {
		return false, false, err
	}
	if n == 0 {
		if err == nil {
			// No event up to the subject's last message, which was stored
			// before the scan began (and a replicated scan ends at its
			// leader): the next scan from this link starts after it.
			c.mu.Lock()
			if c.quietAfter != cp.PrevCheckpoint {
				c.quietAfter, c.quietFrom = cp.PrevCheckpoint, 0
			}
			c.quietFrom = max(c.quietFrom, lastSeq+1)
			c.mu.Unlock()
		}
		return false, false, nil
	}
	now := time.Now
	if c.Now != nil {
		now = c.Now
	}
	cp.Hashes = base64.StdEncoding.EncodeToString(hashes)
	cp.SignedAt = FormatTime(now())
	cp.KeyID = signer.KeyID()
	body, _ := json.Marshal(cp)
	msg := &nats.Msg{Subject: CheckpointSubject, Data: body, Header: nats.Header{}}
	msg.Header[SignerHeader] = []string{signer.KeyID()}
	msg.Header[SignatureHeader] = []string{base64.StdEncoding.EncodeToString(signer.sign(append([]byte(CheckpointSigningPrefix), body...)))}
	hash := BodyHash(body)
	opts := []jetstream.PublishOpt{jetstream.WithMsgID("checkpoint-" + strconv.FormatUint(cp.ToSeq, 10) + "-" + hash[:16])}
	for attempt := 1; ; attempt++ {
		expect := opts
		if attempt <= 3 {
			expect = append(opts[:1:1], jetstream.WithExpectLastSequenceForSubject(lastSeq, CheckpointSubject))
		}
		// The options write headers into msg: none of an earlier try stays.
		msg.Header.Del(jetstream.ExpectedLastSubjSeqHeader)
		msg.Header.Del(jetstream.ExpectedLastSubjSeqSubjHeader)
		ack, err := c.Store.js.PublishMsg(ctx, msg, expect...)
		if IsConflict(err) {
			// Something came in between: another instance's checkpoint
			// over the same link (then this one is not needed), or not a
			// checkpoint at all. Only the subject's last message is read:
			// however much junk came in between, this costs one look.
			got, found, gerr := c.Store.lastFor(ctx, CheckpointSubject)
			if gerr != nil {
				return false, more, gerr
			}
			if other, rerr := readCheckpoint(got, c.Store.Signers()); found && rerr == nil && other.Prev == cp.PrevCheckpoint {
				return false, more, nil
			}
			lastSeq = got.Seq
			continue
		}
		if err != nil {
			return false, more, fmt.Errorf("append checkpoint: %w", err)
		}
		if ack.Duplicate {
			return false, more, nil
		}
		return true, more, nil
	}
}

var errEnough = errors.New("enough events for one checkpoint")

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
			c.log().Warn("checkpoint not written; will retry", "err", err)
			return
		}
	}
}
