package events

import (
	"crypto/ed25519"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/nats-io/nats.go"
)

// An event is signed by the keyledger instance that decided it: Ed25519
// over EventSigningPrefix, its subject, a newline and its body exactly as
// stored. The signature travels in two headers of the stored message, so
// that the body — the envelope of PRODUCT.md — is unchanged and every
// hash of it (prev_hash, checkpoints) means what it always did.
const (
	// SignerHeader names the key that signed: KeyID of its public half.
	SignerHeader = "Keyledger-Signer"
	// SignatureHeader holds the signature, standard base64.
	SignatureHeader = "Keyledger-Signature"
	// EventSigningPrefix opens the signed bytes of an event, so that no
	// signature over an event can pass for one over anything else.
	EventSigningPrefix = "keyledger-event-v1\n"
)

// Signer signs what one keyledger instance writes: its events, its
// checkpoints and its snapshots.
type Signer struct {
	priv ed25519.PrivateKey
	pub  ed25519.PublicKey
	id   string
}

// NewSigner signs with priv.
func NewSigner(priv ed25519.PrivateKey) *Signer {
	pub := priv.Public().(ed25519.PublicKey)
	return &Signer{priv: priv, pub: pub, id: KeyID(pub)}
}

// KeyID names the signer's public key.
func (s *Signer) KeyID() string { return s.id }

// Public returns the signer's public key.
func (s *Signer) Public() ed25519.PublicKey { return s.pub }

// sign returns the signature of msg.
func (s *Signer) sign(msg []byte) []byte { return ed25519.Sign(s.priv, msg) }

// SignEvent sets the signature headers of an event message: its subject
// and body must be final.
func (s *Signer) SignEvent(m *nats.Msg) {
	buf := signedEvent(m.Subject, m.Data)
	if m.Header == nil {
		m.Header = nats.Header{}
	}
	m.Header[SignerHeader] = []string{s.id}
	m.Header[SignatureHeader] = []string{base64.StdEncoding.EncodeToString(s.sign(*buf))}
	putSigned(buf)
}

var signedBuffers = sync.Pool{New: func() any { b := make([]byte, 0, 1024); return &b }}

// signedEvent builds the bytes an event's signature covers, in a pooled
// buffer: give it back with putSigned.
func signedEvent(subject string, body []byte) *[]byte {
	buf := signedBuffers.Get().(*[]byte)
	b := append((*buf)[:0], EventSigningPrefix...)
	b = append(b, subject...)
	b = append(b, '\n')
	*buf = append(b, body...)
	return buf
}

func putSigned(buf *[]byte) {
	if cap(*buf) <= 64<<10 {
		signedBuffers.Put(buf)
	}
}

// Signers is a trust set: the public keys whose signatures make an event,
// a checkpoint or a snapshot count as keyledger's. A key may be retired
// after a sequence: what it signed up to there still counts, nothing it
// signs later does, so that a retired (or stolen) key can never add to the
// history, while the history it signed stays verifiable.
type Signers struct {
	keys map[string]trustedKey
}

type trustedKey struct {
	pub ed25519.PublicKey
	// retiredAfter is the last stream sequence the key may sign; zero:
	// not retired.
	retiredAfter uint64
}

// RetiredAfterHeader is the PEM header of a public key in a trust set file
// that retires the key after a stream sequence.
const RetiredAfterHeader = "Retired-After-Seq"

// NewSigners trusts pubs, none of them retired.
func NewSigners(pubs ...ed25519.PublicKey) *Signers {
	s := &Signers{keys: map[string]trustedKey{}}
	for _, p := range pubs {
		s.keys[KeyID(p)] = trustedKey{pub: p}
	}
	return s
}

// ParseSigners reads a trust set: PEM "PUBLIC KEY" blocks (PKIX, Ed25519),
// each optionally with a Retired-After-Seq header. Anything else is an
// error, so that a typo never trusts less, or more, than meant.
func ParseSigners(raw []byte) (*Signers, error) {
	s := &Signers{keys: map[string]trustedKey{}}
	for n := 1; ; n++ {
		var block *pem.Block
		block, raw = pem.Decode(raw)
		if block == nil {
			if strings.TrimSpace(string(raw)) != "" {
				return nil, fmt.Errorf("trust set: text after key %d is not a PEM block", n-1)
			}
			break
		}
		if block.Type != "PUBLIC KEY" {
			return nil, fmt.Errorf("trust set: block %d is %q, want PUBLIC KEY", n, block.Type)
		}
		key, err := x509.ParsePKIXPublicKey(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("trust set: key %d: %w", n, err)
		}
		pub, ok := key.(ed25519.PublicKey)
		if !ok {
			return nil, fmt.Errorf("trust set: key %d is not an Ed25519 key", n)
		}
		var k trustedKey
		k.pub = pub
		for h, v := range block.Headers {
			if h != RetiredAfterHeader {
				return nil, fmt.Errorf("trust set: key %d: unknown header %q (only %s)", n, h, RetiredAfterHeader)
			}
			if k.retiredAfter, err = strconv.ParseUint(v, 10, 64); err != nil || k.retiredAfter == 0 {
				return nil, fmt.Errorf("trust set: key %d: %s must be a stream sequence, not %q", n, RetiredAfterHeader, v)
			}
		}
		s.keys[KeyID(pub)] = k
	}
	if len(s.keys) == 0 {
		return nil, errors.New("trust set: no public key")
	}
	return s, nil
}

// With returns the set with pub trusted too (not retired), as an instance
// always trusts its own key. It returns an error when the set retires pub:
// an instance must not sign with a key its own trust set has retired.
func (s *Signers) With(pub ed25519.PublicKey) (*Signers, error) {
	id := KeyID(pub)
	out := &Signers{keys: map[string]trustedKey{}}
	if s != nil {
		for k, v := range s.keys {
			out.keys[k] = v
		}
	}
	if k, ok := out.keys[id]; ok && k.retiredAfter != 0 {
		return nil, fmt.Errorf("the signing key %s is retired after sequence %d in the trust set: sign with another key", id, k.retiredAfter)
	}
	out.keys[id] = trustedKey{pub: pub}
	return out, nil
}

// Same reports whether two sets trust the same keys, retired alike.
func (s *Signers) Same(o *Signers) bool {
	if s == nil || o == nil {
		return s == o
	}
	if len(s.keys) != len(o.keys) {
		return false
	}
	for id, k := range s.keys {
		if ok, found := o.keys[id]; !found || ok.retiredAfter != k.retiredAfter {
			return false
		}
	}
	return true
}

// IDs lists the key ids of the set, sorted.
func (s *Signers) IDs() []string {
	if s == nil {
		return nil
	}
	ids := make([]string, 0, len(s.keys))
	for id := range s.keys {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids
}

// PEM writes the set in the form ParseSigners reads, sorted by key id.
func (s *Signers) PEM() []byte {
	var out []byte
	for _, id := range s.IDs() {
		k := s.keys[id]
		der, _ := x509.MarshalPKIXPublicKey(k.pub)
		b := &pem.Block{Type: "PUBLIC KEY", Bytes: der}
		if k.retiredAfter != 0 {
			b.Headers = map[string]string{RetiredAfterHeader: strconv.FormatUint(k.retiredAfter, 10)}
		}
		out = append(out, pem.EncodeToMemory(b)...)
	}
	return out
}

// Trusts reports whether the set holds the key id and may accept its
// signature on a message at seq (zero: a message with no place in the
// stream, such as a snapshot, which a retired key may not sign).
func (s *Signers) Trusts(keyID string, seq uint64) bool {
	_, ok := s.key(keyID, seq)
	return ok
}

func (s *Signers) key(keyID string, seq uint64) (ed25519.PublicKey, bool) {
	if s == nil {
		return nil, false
	}
	k, ok := s.keys[keyID]
	if !ok || k.retiredAfter != 0 && (seq == 0 || seq > k.retiredAfter) {
		return nil, false
	}
	return k.pub, true
}

// verify checks sig over msg by keyID, for a message at seq.
func (s *Signers) verify(keyID string, seq uint64, msg, sig []byte) bool {
	pub, ok := s.key(keyID, seq)
	return ok && len(sig) == ed25519.SignatureSize && ed25519.Verify(pub, msg, sig)
}

// Unsigned says why an event is not keyledger's.
type Unsigned string

// Reasons an event does not count.
const (
	NoSignature      Unsigned = "it carries no signature"
	UnknownSigner    Unsigned = "its signer is not in the trust set (or is retired before it)"
	BadSignature     Unsigned = "its signature does not verify"
	NotVouched       Unsigned = "a signed checkpoint lists it as not signed by a trusted instance"
	DiffersFromCheck Unsigned = "it differs from the event a signed checkpoint lists at its sequence"
)

// VerifyEvent checks the signature of the event message at seq: "" when a
// trusted signer signed exactly this subject and body, otherwise why not.
func (s *Signers) VerifyEvent(seq uint64, subject string, body []byte, h nats.Header) Unsigned {
	signer, sig := headerValue(h, SignerHeader), headerValue(h, SignatureHeader)
	if signer == "" || sig == "" {
		return NoSignature
	}
	if !s.Trusts(signer, seq) {
		return UnknownSigner
	}
	raw, err := base64.StdEncoding.DecodeString(sig)
	if err != nil {
		return BadSignature
	}
	buf := signedEvent(subject, body)
	ok := s.verify(signer, seq, *buf, raw)
	putSigned(buf)
	if !ok {
		return BadSignature
	}
	return ""
}

// headerValue reads a header as stored, without canonicalising its name.
func headerValue(h nats.Header, name string) string {
	if v := h[name]; len(v) == 1 {
		return v[0]
	}
	return ""
}
