package events

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
)

// coverage vouches for events by the signed checkpoints that list them,
// read in step with a feed from a sequence on: a replay then compares an
// event's hash with the one signed instead of checking its signature,
// which costs a hundred times more. Only the checkpoints in the stream
// when the feed starts are read; events after the last of them (the live
// tail) are judged by their signatures.
type coverage struct {
	next   <-chan *signedCheckpoint
	cancel context.CancelFunc
	cur    *signedCheckpoint
	done   bool
	// signing is set once the reader has met a signed event or a version 2
	// checkpoint: from then on no event is taken as written before signing.
	signing bool
}

// cover starts reading the checkpoints from sequence from on, a few ahead
// of the feed, on a goroutine of their own.
func (s *Store) cover(ctx context.Context, from uint64) *coverage {
	ctx, cancel := context.WithCancel(ctx)
	ch := make(chan *signedCheckpoint, 2)
	c := &coverage{next: ch, cancel: cancel}
	go func() {
		defer close(ch)
		set := s.Signers()
		v2 := false
		err := s.Scan(ctx, CheckpointSubject, from, func(m Msg) error {
			cp, err := readCheckpoint(m, set)
			if err != nil {
				return nil // not keyledger's: vouches for nothing
			}
			if cp.Version == 1 && v2 {
				return nil // written after signing began: no release writes that
			}
			v2 = v2 || cp.Version == 2
			if cp.ToSeq < from {
				return nil
			}
			select {
			case ch <- cp:
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		})
		if err != nil && !errors.Is(err, context.Canceled) {
			s.log.Warn("reading the checkpoints for a replay; judging the rest by signature", "err", err)
		}
	}()
	return c
}

func (c *coverage) stop() { c.cancel() }

// judge says what the signed record says of the event at seq with this
// stored hash: covered is false when no checkpoint read names it, legacy
// true when the one that does is of version 1, written before events were
// signed, which vouches only for events without a signature.
func (c *coverage) judge(seq uint64, hash string) (why Unsigned, covered, legacy bool) {
	for !c.done && (c.cur == nil || c.cur.ToSeq < seq) {
		cp, ok := <-c.next
		if !ok {
			c.done, c.cur = true, nil
			break
		}
		c.cur = cp
		if cp.Version == 2 {
			c.signing = true
		}
	}
	if c.cur == nil {
		return "", false, false
	}
	signed, untrusted, listed := c.cur.lookup(seq)
	if !listed {
		return "", false, false
	}
	legacy = c.cur.Version == 1
	var sum [32]byte
	if n, err := hex.Decode(sum[:], []byte(hash)); err != nil || n != 32 || !bytes.Equal(sum[:], signed) {
		return DiffersFromCheck, true, legacy
	}
	if untrusted {
		return NotVouched, true, legacy
	}
	return "", true, legacy
}
