package events

import (
	"context"
	"crypto/ed25519"
	"sync"
	"sync/atomic"
)

// Verdicts are what the projections decided of each event they applied:
// the feed judged it once, reads need not judge it again.
type Verdicts interface {
	// Judged reports whether the event at seq was applied as keyledger's;
	// known is false for a sequence not judged yet.
	Judged(seq uint64) (trusted, known bool)
}

// trustState is what a store knows to tell keyledger's events from
// anyone else's: its signing key, its trust set, the events it appended
// itself, and the projections' verdicts.
type trustState struct {
	mu       sync.Mutex // over the swaps and the watchers
	watchers []func()
	signer   atomic.Pointer[Signer]
	signers  atomic.Pointer[Signers]
	verdicts Verdicts
	// waitVerdicts, when set, waits until verdicts has judged a sequence.
	waitVerdicts func(ctx context.Context, seq uint64) error
	own          ownAppends
}

// SetSigner makes s sign every event it appends (and checkpoints) with
// signer, which it trusts from then on as well. Safe while appending: a
// key rotation swaps it in place.
func (s *Store) SetSigner(signer *Signer) error {
	return s.SetTrust(signer, s.trust.signers.Load())
}

// SetSigners replaces the trust set; the store's own signing key stays
// trusted. Safe while following: a reload swaps it in place.
func (s *Store) SetSigners(set *Signers) error {
	return s.SetTrust(s.trust.signer.Load(), set)
}

// SetTrust replaces the signing key (nil: keep none) and the trust set at
// once, so that a new key and the retirement of the old one are taken in
// one step. It refuses a trust set that retires the signing key. When the
// trust set changes, what watches it (WatchSigners) is told, so that what
// was judged under the old one is judged again.
func (s *Store) SetTrust(signer *Signer, set *Signers) error {
	if signer != nil {
		var err error
		if set, err = set.With(signer.Public()); err != nil {
			return err
		}
	}
	s.trust.mu.Lock()
	old := s.trust.signers.Swap(set)
	s.trust.signer.Store(signer)
	watchers := s.trust.watchers
	s.trust.mu.Unlock()
	if !old.Same(set) {
		for _, fn := range watchers {
			fn()
		}
	}
	return nil
}

// WatchSigners calls fn, on the caller of SetTrust, whenever the trust set
// changes. fn must be quick: hand long work off.
func (s *Store) WatchSigners(fn func()) {
	s.trust.mu.Lock()
	defer s.trust.mu.Unlock()
	s.trust.watchers = append(s.trust.watchers, fn)
}

// Signer returns the signing key, nil when the store has none.
func (s *Store) Signer() *Signer { return s.trust.signer.Load() }

// Signers returns the trust set.
func (s *Store) Signers() *Signers { return s.trust.signers.Load() }

// UseVerdicts lets reads of the history take the projections' verdicts
// for events they have applied instead of checking each signature again.
// Set it before reading.
func (s *Store) UseVerdicts(v Verdicts) { s.trust.verdicts = v }

// WaitVerdicts lets Judge wait for the projections to judge an event with
// wait (their runner's WaitFor) rather than look again every 20 ms: a
// webhook delivery pulled before the projections applied its event then
// goes out as soon as they have. Set it with UseVerdicts, before reading.
func (s *Store) WaitVerdicts(wait func(ctx context.Context, seq uint64) error) {
	s.trust.waitVerdicts = wait
}

// PublicKey is the public half of the store's signing key; nil without one.
func (s *Store) PublicKey() ed25519.PublicKey {
	if sg := s.Signer(); sg != nil {
		return sg.Public()
	}
	return nil
}

// trusted judges an event read back from the stream, as a read of the
// history needs: one this store appended, one the projections applied as
// trusted, or one whose signature a trusted signer made.
func (s *Store) trusted(m Msg, hash string) bool {
	if s.trust.own.has(m.Seq, hash) {
		return true
	}
	if v := s.trust.verdicts; v != nil {
		if trusted, known := v.Judged(m.Seq); known {
			return trusted
		}
	}
	return s.Signers().VerifyEvent(m.Seq, m.Subject, m.Data, m.Header) == ""
}

// unjudged reports whether a reader of the history beside projections
// (UseVerdicts) meets an event the projections have not judged yet: it
// stops there rather than show an event they might refuse — a copy of a
// genuine one, say, which a signature alone does not tell.
func (s *Store) unjudged(seq uint64) bool {
	v := s.trust.verdicts
	if v == nil {
		return false
	}
	_, known := v.Judged(seq)
	return !known
}

// ownAppends remembers the events this store appended and the hash of
// each as stored, until the feed has passed them: an instance need not
// check its own signatures.
type ownAppends struct {
	mu sync.Mutex
	m  map[uint64]string
}

// maxOwn bounds what is remembered when no feed takes the entries away:
// past it, the oldest are checked by signature like anyone's.
const maxOwn = 1 << 16

func (o *ownAppends) add(seq uint64, hash string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.m == nil || len(o.m) >= maxOwn {
		o.m = map[uint64]string{}
	}
	o.m[seq] = hash
}

func (o *ownAppends) has(seq uint64, hash string) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	h, ok := o.m[seq]
	return ok && h == hash
}

// take is has, forgetting the entry: the feed passes each event once.
func (o *ownAppends) take(seq uint64, hash string) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	h, ok := o.m[seq]
	if ok {
		delete(o.m, seq)
	}
	return ok && h == hash
}
