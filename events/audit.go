package events

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync"
)

// Finding is a place where the stream departs from what keyledger wrote:
// Seq as the signed record knows it where there is one.
type Finding struct {
	Seq     uint64
	Problem string
}

func (f Finding) String() string { return fmt.Sprintf("seq %d: %s", f.Seq, f.Problem) }

// SignerStat is what one signing key signed.
type SignerStat struct {
	Events, Checkpoints int
	// First and Last are the sequences of the first and last message it
	// signed, events and checkpoints: retiring the key after Last keeps
	// all of it.
	First, Last uint64
}

func (r *Report) signed(keyID string, seq uint64, checkpoint bool) {
	st := r.Signers[keyID]
	if st.Events+st.Checkpoints == 0 {
		st.First = seq
	}
	if checkpoint {
		st.Checkpoints++
	} else {
		st.Events++
	}
	st.Last = seq
	r.Signers[keyID] = st
}

// Report is the outcome of an audit.
type Report struct {
	Events      int
	Checkpoints int
	LastSeq     uint64 // the last sequence read
	SignedUpTo  uint64 // the last event covered by a signed checkpoint
	// Head is the newest signed checkpoint; nil when there is none.
	Head *Head
	// Legacy counts events written before signing began, accepted because
	// a signed checkpoint covers them.
	Legacy int
	// Signers says, per signing key id, what it signed.
	Signers map[string]SignerStat
	// Finding is the first place where the history itself was removed,
	// altered or reordered, or where the signed record is missing.
	Finding *Finding
	// Forged lists every message in the stream that no trusted keyledger
	// instance wrote, events and checkpoints alike. None was ever applied.
	Forged []Finding
}

// Intact reports whether nothing was found: the history is whole, signed,
// and nothing in the stream was put there by anyone else.
func (r Report) Intact() bool { return r.Finding == nil && len(r.Forged) == 0 }

// AuditOptions say what to check the stream against.
type AuditOptions struct {
	// Signers is the trust set (required).
	Signers *Signers
	// Anchor, when set, is a head saved earlier, outside the system: the
	// stream must still hold that very checkpoint.
	Anchor *Head
}

// pendingEvent is an event read but not yet covered by a signed checkpoint.
type pendingEvent struct {
	seq    uint64
	hash   string
	chain  string   // the running chain up to and including it
	forged Unsigned // "" when signed by a trusted key, or legacy
	legacy bool     // unsigned, written before signing began
	env    *Envelope
	kind   string // its type, for naming it
}

// auditor folds the stream message by message.
type auditor struct {
	opts     AuditOptions
	r        Report
	lastHash map[string]string // org/key → stored hash of its last accepted event
	lastSeq  map[string]uint64
	seen     map[string]uint64 // event id → sequence of the accepted event
	pending  []pendingEvent
	chain    string
	links    checkpointChain
	last     *signedCheckpoint
	signing  bool // an event was signed, or a version 2 checkpoint seen: no more legacy
	anchored bool
	suspect  *Finding
}

// Audit replays the whole stream and checks it against the signed record:
// every event's signature (or, for events written before signing began,
// a signed checkpoint that covers them); each checkpoint's signature, its
// place in the chain of checkpoints and the exact list of events it
// names, which names the exact sequence of a removal, alteration or swap;
// each key's prev_hash chain; and the anchor, if given. It names every
// message no trusted signer wrote.
func Audit(ctx context.Context, s *Store, opts AuditOptions) (Report, error) {
	if opts.Signers == nil {
		return Report{}, errors.New("audit: no trust set")
	}
	a := &auditor{opts: opts, lastHash: map[string]string{}, lastSeq: map[string]uint64{}, seen: map[string]uint64{}, r: Report{Signers: map[string]SignerStat{}}}
	var batch []Msg
	flush := func() error {
		verdicts := verifyAll(opts.Signers, batch)
		for i, m := range batch {
			a.r.LastSeq = m.Seq
			if m.IsEvent() {
				a.event(m, verdicts[i])
			} else {
				a.checkpoint(m)
			}
			if a.r.Finding != nil {
				return errFound
			}
		}
		batch = batch[:0]
		return nil
	}
	err := s.Scan(ctx, "", 1, func(m Msg) error {
		batch = append(batch, m)
		if len(batch) < auditBatch {
			return nil
		}
		return flush()
	})
	if err == nil {
		err = flush()
	}
	if err != nil && !errors.Is(err, errFound) {
		return a.r, err
	}
	a.finish()
	return a.r, nil
}

var errFound = errors.New("finding")

// auditBatch is how many messages have their signatures checked at once,
// on every core.
const auditBatch = 1024

// verifyAll checks the signature of every event in batch, in parallel.
func verifyAll(set *Signers, batch []Msg) []Unsigned {
	out := make([]Unsigned, len(batch))
	var wg sync.WaitGroup
	workers := runtime.GOMAXPROCS(0)
	for w := range workers {
		wg.Go(func() {
			for i := w; i < len(batch); i += workers {
				if m := batch[i]; m.IsEvent() {
					out[i] = set.VerifyEvent(m.Seq, m.Subject, m.Data, m.Header)
				}
			}
		})
	}
	wg.Wait()
	return out
}

func (a *auditor) event(m Msg, why Unsigned) {
	a.r.Events++
	h := BodyHash(m.Data)
	a.chain = ChainNext(a.chain, m.Seq, h)
	p := pendingEvent{seq: m.Seq, hash: h, chain: a.chain, forged: why, kind: "event"}
	var env Envelope
	if err := json.Unmarshal(m.Data, &env); err == nil {
		p.env, p.kind = &env, env.Type+" "+env.OrgID+"/"+env.KeyID
	}
	switch {
	case why == "":
		a.signing = true
		if copied := a.copyOf(p); copied != "" {
			p.forged = copied
			a.forged(p, copied)
			break
		}
		a.r.signed(headerValue(m.Header, SignerHeader), m.Seq, false)
		a.accept(p)
	case why == NoSignature && !a.signing:
		p.forged, p.legacy = "", true // until a signed checkpoint says otherwise
	default:
		a.forged(p, why)
	}
	a.pending = append(a.pending, p)
}

// copyOf says, for a signed event, whether it is a copy of one accepted
// before (the same event id: a genuine event published again, which its
// signature alone cannot tell): "" when it is not.
func (a *auditor) copyOf(p pendingEvent) Unsigned {
	if p.env == nil {
		return ""
	}
	if seq, ok := a.seen[p.env.EventID]; ok {
		return Unsigned(fmt.Sprintf("it is a copy of the event at seq %d, published again", seq))
	}
	return ""
}

// forged names an event no trusted signer wrote.
func (a *auditor) forged(p pendingEvent, why Unsigned) {
	a.r.Forged = append(a.r.Forged, Finding{p.seq, fmt.Sprintf("%s was not written by keyledger: %s", p.kind, why)})
}

// accept checks an event that counts against its key's chain.
func (a *auditor) accept(p pendingEvent) {
	if p.env == nil {
		a.suspectAt(p.seq, "the event cannot be read: altered")
		return
	}
	env := p.env
	ref := env.OrgID + "/" + env.KeyID
	if env.PrevHash != a.lastHash[ref] {
		a.suspectAt(p.seq, fmt.Sprintf("its prev_hash does not match the last event of key %s (seq %d): an event of this key was removed, altered or reordered", env.KeyID, a.lastSeq[ref]))
	}
	a.lastHash[ref], a.lastSeq[ref] = p.hash, p.seq
	a.seen[env.EventID] = p.seq
}

// suspectAt keeps the first problem seen between checkpoints; the next
// checkpoint usually says exactly which event it was.
func (a *auditor) suspectAt(seq uint64, problem string) {
	if a.suspect == nil {
		a.suspect = &Finding{Seq: seq, Problem: problem}
	}
}

func (a *auditor) checkpoint(m Msg) {
	cp, err := readCheckpoint(m, a.opts.Signers)
	if err != nil {
		a.r.Forged = append(a.r.Forged, Finding{m.Seq, "a message on the checkpoint subject was not written by keyledger: " + strings.TrimPrefix(err.Error(), errNotSigned.Error()+": ")})
		return
	}
	if cp.Version == 2 {
		a.signing = true
	}
	switch a.links.place(cp) {
	case aCopy:
		a.r.Forged = append(a.r.Forged, Finding{m.Seq, fmt.Sprintf("a message on the checkpoint subject was not written by keyledger: it is a copy of the checkpoint at seq %d, published again", a.links.links[cp.Hash])})
		return
	case redundant:
		return // written beside another for the same link: the next link covers its events
	case astray:
		if a.last == nil {
			a.r.Finding = &Finding{cp.FromSeq, "the first signed checkpoint names one before it that the stream does not hold: the stream was truncated or recreated"}
		} else {
			a.r.Finding = &Finding{cp.FromSeq, "the checkpoint before this one is missing or altered"}
		}
		return
	}
	covered := 0
	for covered < len(a.pending) && a.pending[covered].seq <= cp.ToSeq {
		covered++
	}
	if f := compare(a.pending[:covered], cp.refs()); f != nil {
		a.r.Finding = f
		return
	}
	if covered > 0 && a.pending[covered-1].chain != cp.Chain {
		a.r.Finding = &Finding{cp.ToSeq, "the chain over all events differs from the signed one"}
		return
	}
	for _, p := range a.pending[:covered] {
		a.vouched(cp, p)
	}
	if a.suspect != nil {
		a.r.Finding = a.suspect
		return
	}
	if a.opts.Anchor != nil && cp.Seq == a.opts.Anchor.Seq {
		if cp.Hash != a.opts.Anchor.Hash || cp.Chain != a.opts.Anchor.Chain || cp.ToSeq != a.opts.Anchor.ToSeq {
			a.r.Finding = &Finding{cp.Seq, "the checkpoint at the anchor's sequence is not the anchor: the stream was rewritten or recreated"}
			return
		}
		a.anchored = true
	}
	a.r.Checkpoints++
	a.r.signed(cp.KeyID, cp.Seq, true)
	a.r.SignedUpTo = cp.ToSeq
	h := cp.head()
	a.r.Head = &h
	a.last = cp
	a.pending = append(a.pending[:0], a.pending[covered:]...)
}

// vouched settles an event by what the checkpoint covering it says.
func (a *auditor) vouched(cp *signedCheckpoint, p pendingEvent) {
	_, untrusted, _ := cp.lookup(p.seq)
	switch {
	case p.legacy && cp.Version == 1:
		a.r.Legacy++
		a.accept(p)
	case p.legacy: // a version 2 checkpoint lists an unsigned event
		if !untrusted {
			a.r.Finding = &Finding{p.seq, fmt.Sprintf("the checkpoint by %s vouches for %s, which carries no signature", cp.KeyID, p.kind)}
			return
		}
		a.forged(p, NoSignature)
	case p.forged != "" && cp.Version == 2 && !untrusted:
		a.r.Finding = &Finding{p.seq, fmt.Sprintf("the checkpoint by %s vouches for %s, which no trusted key signed", cp.KeyID, p.kind)}
	case p.forged == "" && untrusted:
		a.r.Finding = &Finding{p.seq, fmt.Sprintf("%s is signed by a trusted key, but the checkpoint by %s did not vouch for it: the instances' trust sets differ", p.kind, cp.KeyID)}
	}
}

// finish says what the end of the stream leaves unsettled.
func (a *auditor) finish() {
	if a.r.Finding == nil && a.suspect != nil {
		a.r.Finding = a.suspect // no later checkpoint to say more
	}
	for _, p := range a.pending {
		if p.legacy {
			a.forged(p, "it carries no signature, and no signed checkpoint covers it")
		}
	}
	if a.r.Finding != nil {
		return
	}
	if a.last == nil {
		a.r.Finding = &Finding{0, "the stream holds no signed checkpoint: nothing vouches for the history as a whole"}
		return
	}
	if a.opts.Anchor != nil && !a.anchored {
		a.r.Finding = &Finding{a.opts.Anchor.Seq, fmt.Sprintf("the stream no longer holds the anchor, the checkpoint at seq %d up to event %d: it was truncated, rolled back or recreated", a.opts.Anchor.Seq, a.opts.Anchor.ToSeq)}
	}
}

// compare names the first difference between the events found and those
// signed, with the signed sequence numbers.
func compare(found []pendingEvent, signed []EventRef) *Finding {
	for i := 0; i < len(signed); i++ {
		if i >= len(found) {
			return &Finding{signed[i].Seq, "the event is missing: removed"}
		}
		if found[i].hash == signed[i].Hash && found[i].seq == signed[i].Seq {
			continue
		}
		switch {
		case i+1 < len(signed) && i+1 < len(found) && found[i].hash == signed[i+1].Hash && found[i+1].hash == signed[i].Hash:
			return &Finding{signed[i].Seq, fmt.Sprintf("the events at seq %d and %d were swapped: reordered", signed[i].Seq, signed[i+1].Seq)}
		case i+1 < len(signed) && found[i].hash == signed[i+1].Hash:
			return &Finding{signed[i].Seq, "the event is missing: removed"}
		}
		return &Finding{signed[i].Seq, "the event differs from the one signed: altered"}
	}
	if len(found) > len(signed) {
		return &Finding{found[len(signed)].seq, "an event not in the signed record was inserted"}
	}
	return nil
}
