package events

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// checkpointChain follows the links of the chain of checkpoints. Each
// checkpoint names the one before (its body's hash); the chain is, from
// the first, the earliest signed checkpoint in the stream that names the
// chain's last link. A signed checkpoint that names an earlier link was
// written beside another at the same moment (redundant: the next link
// covers its events); one whose body is a link's is a copy, published
// again; one that names no link means that one before it is missing.
type checkpointChain struct {
	last  *signedCheckpoint // nil: no link yet
	links map[string]uint64 // body hash → sequence of every link
}

// linkKind says what a signed checkpoint is to the chain.
type linkKind int

const (
	aLink     linkKind = iota // it names the last link: the chain's next
	aCopy                     // the body of a link, published again
	redundant                 // it names an earlier link: written beside another
	astray                    // it names no link: one before it is missing
)

// place says what cp is to the chain, and makes it the last link if it is
// the next one.
func (ch *checkpointChain) place(cp *signedCheckpoint) linkKind {
	if ch.links == nil {
		ch.links = map[string]uint64{}
	}
	last := ""
	if ch.last != nil {
		last = ch.last.Hash
	}
	switch _, known := ch.links[cp.Prev]; {
	case ch.links[cp.Hash] != 0:
		return aCopy
	case cp.Prev == last:
		ch.last = cp
		ch.links[cp.Hash] = cp.Seq
		return aLink
	case known:
		return redundant
	}
	return astray
}

// chainState is a store's view of the chain of checkpoints: every message
// of the checkpoint subject up to upTo has been placed, by the feed as it
// passes them or by a scan of the subject.
type chainState struct {
	mu       sync.Mutex
	chain    checkpointChain
	upTo     uint64
	feedFrom uint64 // the feed reads every message from here on; 0: no feed
	rejected atomic.Uint64
	logged   logBudget
}

// maxChainScan bounds what one look for the chain's head reads of the
// checkpoint subject, so that a call always returns however much junk
// was published; the next call goes on where it stopped.
const maxChainScan = 50000

// feedChain tells the chain that a feed reads every message from seq on,
// unless another feed does already; release says it stopped.
func (s *Store) feedChain(seq uint64) (release func()) {
	s.chain.mu.Lock()
	defer s.chain.mu.Unlock()
	if s.chain.feedFrom != 0 {
		return func() {}
	}
	s.chain.feedFrom = seq
	return func() {
		s.chain.mu.Lock()
		defer s.chain.mu.Unlock()
		s.chain.feedFrom = 0
	}
}

// placeFromFeed places a message of the checkpoint subject that the feed
// reads, when everything before it is placed already.
func (s *Store) placeFromFeed(m Msg) {
	c := &s.chain
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.feedFrom == 0 || c.upTo+1 < c.feedFrom || m.Seq <= c.upTo {
		return // not seeded up to where the feed started: a scan places it
	}
	s.placeLocked(m)
}

// chainHead returns the chain's last link as of the subject's message at
// last. What the feed has not placed yet is read from the subject, from
// where it was last placed (at most maxChainScan messages a call: the
// next call goes on).
func (s *Store) chainHead(ctx context.Context, last uint64) (*signedCheckpoint, error) {
	c := &s.chain
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.upTo >= last {
		return c.chain.last, nil
	}
	read := 0
	err := s.Scan(ctx, CheckpointSubject, c.upTo+1, func(m Msg) error {
		if m.Seq > last || read == maxChainScan {
			return errEnough
		}
		read++
		s.placeLocked(m)
		return nil
	})
	if err != nil && !errors.Is(err, errEnough) {
		return nil, err
	}
	return c.chain.last, nil
}

// placeLocked places one message of the checkpoint subject.
func (s *Store) placeLocked(m Msg) {
	c := &s.chain
	c.upTo = m.Seq
	cp, err := readCheckpoint(m, s.Signers())
	var why string
	switch {
	case err != nil:
		why = err.Error()
	default:
		switch c.chain.place(cp) {
		case aCopy:
			why = fmt.Sprintf("a copy of the checkpoint at seq %d, published again", c.chain.links[cp.Hash])
		case astray:
			s.log.Error("a signed checkpoint names none of the chain's: a checkpoint before it is missing from the stream", "seq", m.Seq)
		}
	}
	if why == "" {
		return
	}
	c.rejected.Add(1)
	if n := c.logged.take(); n >= 0 {
		s.log.Error("skipping a message on the checkpoint subject that is no checkpoint of keyledger's (keyledger_checkpoints_rejected_total counts them all)",
			"seq", m.Seq, "why", why, "not_logged_before", n)
	}
}

// logBudget lets a flood of the same complaint through ten times a
// minute, saying how many it held back.
type logBudget struct {
	since   time.Time
	n, held int
}

// take returns how many were held back since the last line, or -1 when
// this one is to be held back too.
func (b *logBudget) take() int {
	now := time.Now()
	if now.Sub(b.since) > time.Minute {
		b.since, b.n = now, 0
	}
	if b.n == 10 {
		b.held++
		return -1
	}
	b.n++
	held := b.held
	b.held = 0
	return held
}
