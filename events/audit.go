package events

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
)

// Finding is the first place where the stream departs from what was
// written: Seq as the signed record knows it where there is one.
type Finding struct {
	Seq     uint64
	Problem string
}

func (f Finding) String() string { return fmt.Sprintf("seq %d: %s", f.Seq, f.Problem) }

// Report is the outcome of an audit.
type Report struct {
	Events      int
	Checkpoints int
	LastSeq     uint64 // the last sequence read
	SignedUpTo  uint64 // the last event covered by a valid checkpoint
	Finding     *Finding
}

// Intact reports whether nothing was found.
func (r Report) Intact() bool { return r.Finding == nil }

// auditor folds the stream message by message.
type auditor struct {
	pub      ed25519.PublicKey
	r        Report
	lastHash map[string]string // org/key → stored hash of its last event
	lastSeq  map[string]uint64
	pending  []EventRef // events since the last checkpoint
	chain    string
	prevCP   string // hash of the last checkpoint's body
	suspect  *Finding
}

// Audit replays the whole stream and reports the first event that was
// removed, altered or reordered, or a checkpoint that is forged or missing.
// Each key's prev_hash chain is checked at every event; each checkpoint's
// signature, its place in the checkpoint chain, and the exact list of
// events it signed are checked when it is reached, which names the exact
// sequence of a removal, alteration or swap.
func Audit(ctx context.Context, s *Store, pub ed25519.PublicKey) (Report, error) {
	a := &auditor{pub: pub, lastHash: map[string]string{}, lastSeq: map[string]uint64{}}
	err := s.Scan(ctx, "", 1, func(m Msg) error {
		a.r.LastSeq = m.Seq
		if m.IsEvent() {
			a.event(m)
		} else {
			a.checkpoint(m)
		}
		if a.r.Finding != nil {
			return errFound
		}
		return nil
	})
	if err != nil && !errors.Is(err, errFound) {
		return a.r, err
	}
	if a.r.Finding == nil && a.suspect != nil {
		a.r.Finding = a.suspect // no later checkpoint to say more
	}
	return a.r, nil
}

var errFound = errors.New("finding")

func (a *auditor) event(m Msg) {
	a.r.Events++
	h := BodyHash(m.Data)
	a.pending = append(a.pending, EventRef{Seq: m.Seq, Hash: h})
	a.chain = ChainNext(a.chain, m.Seq, h)
	var env Envelope
	if err := json.Unmarshal(m.Data, &env); err != nil {
		a.suspectAt(m.Seq, "the event cannot be read: altered")
		return
	}
	if !strings.HasPrefix(m.Subject, SubjectRoot+"."+env.OrgID+"."+env.KeyID+".") {
		a.suspectAt(m.Seq, fmt.Sprintf("the event names %s/%s but is stored under %s: altered", env.OrgID, env.KeyID, m.Subject))
	}
	ref := env.OrgID + "/" + env.KeyID
	if env.PrevHash != a.lastHash[ref] {
		a.suspectAt(m.Seq, fmt.Sprintf("its prev_hash does not match the last event of key %s (seq %d): an event of this key was removed, altered or reordered", env.KeyID, a.lastSeq[ref]))
	}
	a.lastHash[ref], a.lastSeq[ref] = h, m.Seq
}

// suspectAt keeps the first problem seen between checkpoints; the next
// checkpoint usually says exactly which event it was.
func (a *auditor) suspectAt(seq uint64, problem string) {
	if a.suspect == nil {
		a.suspect = &Finding{Seq: seq, Problem: problem}
	}
}

func (a *auditor) checkpoint(m Msg) {
	var cp Checkpoint
	if err := json.Unmarshal(m.Data, &cp); err != nil {
		a.r.Finding = &Finding{m.Seq, "the checkpoint cannot be read: altered"}
		return
	}
	if !cp.Verify(a.pub) {
		a.r.Finding = &Finding{m.Seq, fmt.Sprintf("the checkpoint up to seq %d has no valid signature by key %s: forged or altered", cp.ToSeq, KeyID(a.pub))}
		return
	}
	if cp.PrevCheckpoint != a.prevCP {
		a.r.Finding = &Finding{cp.FromSeq, "the checkpoint before this one is missing or altered"}
		return
	}
	if f := compare(a.pending, cp.Events); f != nil {
		a.r.Finding = f
		return
	}
	if a.suspect != nil {
		a.r.Finding = a.suspect
		return
	}
	if a.chain != cp.Chain {
		a.r.Finding = &Finding{cp.ToSeq, "the chain over all events differs from the signed one"}
		return
	}
	a.r.Checkpoints++
	a.r.SignedUpTo = cp.ToSeq
	a.pending = a.pending[:0]
	a.prevCP = BodyHash(m.Data)
}

// compare names the first difference between the events found and those
// signed, with the signed sequence numbers.
func compare(found, signed []EventRef) *Finding {
	for i := 0; i < len(signed); i++ {
		if i >= len(found) {
			return &Finding{signed[i].Seq, "the event is missing: removed"}
		}
		if found[i].Hash == signed[i].Hash {
			continue
		}
		switch {
		case i+1 < len(signed) && i+1 < len(found) && found[i].Hash == signed[i+1].Hash && found[i+1].Hash == signed[i].Hash:
			return &Finding{signed[i].Seq, fmt.Sprintf("the events at seq %d and %d were swapped: reordered", signed[i].Seq, signed[i+1].Seq)}
		case i+1 < len(signed) && found[i].Hash == signed[i+1].Hash:
			return &Finding{signed[i].Seq, "the event is missing: removed"}
		}
		return &Finding{signed[i].Seq, "the event differs from the one signed: altered"}
	}
	if len(found) > len(signed) {
		return &Finding{found[len(signed)].Seq, "an event not in the signed record was inserted"}
	}
	return nil
}
