package projections

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"sync"
	"time"
	"unsafe"

	"github.com/oklog/ulid/v2"

	"github.com/keyledger/keyledger/domain"
)

// Table is the state of every key, held compactly for a million keys and
// more: one row per key without a pointer in it (the garbage collector
// never scans the rows), hashes as bytes, instants as microseconds, text in
// an append-only arena, and org ids, scope sets and actors interned. The
// listing and the verify index are two views of one table (Listing, Index),
// so that each event is applied, and each key held, once.
type Table struct {
	seqMark
	mu sync.RWMutex

	rows rowChunks
	// byID finds a row by 8 bytes of its id; the rare id whose 8 bytes
	// another key's already took is in byFullID, looked up first.
	byID     hashIndex
	byFullID map[rowID]uint32
	byHash   hashIndex // first 8 bytes of every secret hash a key ever had → row
	// fullHash holds the rare hash whose first 8 bytes another key's hash
	// already took; it is looked up first.
	fullHash map[[sha256.Size]byte]uint32
	previous map[uint32]previousSecret // keys that were rotated
	// retired holds, whole, the secrets a key had before its previous one,
	// most recently replaced first, as many as a key remembers
	// (domain.MaxReplacedSecrets, the previous one included): such a secret
	// answers EXPIRED or REVOKED only when all 32 bytes match, never on
	// byHash's 8 alone. A list is replaced, never changed in place, so
	// that a snapshot's copy of the map may share it.
	retired map[uint32][]retiredSecret

	orgs   interner[string]
	byOrg  [][]uint32 // per org, rows in ascending key id order
	scopes interner[string]
	sets   [][]string // scope sets, by scopes' index
	actors interner[domain.Actor]
	text   arena
	// rejected holds, ascending, the sequences of the events refused:
	// reads of the history leave them out (Judged).
	rejected []uint64
	// revokedByOrg counts the revoked keys of each org (by its index).
	revokedByOrg []int
	// leaks holds the latest leak report of each key reported leaked.
	leaks map[uint32]leakMark
}

// leakMark is a key's latest leak report.
type leakMark struct {
	hash string // the leaked secret's, as the event states it
	url  string
	at   int64 // Unix microseconds
}

func (t *Table) countRevoked(org uint32) {
	for int(org) >= len(t.revokedByOrg) {
		t.revokedByOrg = append(t.revokedByOrg, 0)
	}
	t.revokedByOrg[org]++
}

// row is one key, in 160 bytes. It holds no pointer.
type row struct {
	hash    [sha256.Size]byte // the current secret's SHA-256
	last    [sha256.Size]byte // the stored hash of the key's last event
	id      rowID
	version uint64
	expires int64 // Unix microseconds; noTime for none
	created int64
	rotated int64
	revoked int64
	keyID   textRef
	name    textRef
	masked  textRef
	scopes  uint32
	actor   uint32
	flags   uint8
}

// rowChunks holds the rows in chunks of a fixed size: growing never copies
// them, and never leaves more than one chunk's room unused.
type rowChunks struct {
	chunks [][]row
	n      int
}

const rowChunkShift = 12

func (rc *rowChunks) at(slot uint32) *row {
	return &rc.chunks[slot>>rowChunkShift][slot&(1<<rowChunkShift-1)]
}

func (rc *rowChunks) add(r row) uint32 {
	if rc.n>>rowChunkShift == len(rc.chunks) {
		rc.chunks = append(rc.chunks, make([]row, 1<<rowChunkShift))
	}
	slot := uint32(rc.n)
	*rc.at(slot) = r
	rc.n++
	return slot
}

const (
	flagRevoked uint8 = 1 << iota
	flagHash          // hash holds the secret's hash (false only on a corrupt event)
	flagLast          // last holds the last event's hash (false for events not read back)
	flagRotated       // previous holds the secret the last rotation replaced
)

// rowID finds a row: the key id's 16 bytes (a ULID; a key id that is not
// one is hashed) and the org's index.
type rowID struct {
	key [16]byte
	org uint32
}

// short is the 8 bytes of id that byID holds: the ULID's random part, mixed
// with the org.
func (id rowID) short() uint64 {
	return binary.LittleEndian.Uint64(id.key[8:]) ^ uint64(id.org)*0x9e3779b97f4a7c15
}

type previousSecret struct {
	hash    [sha256.Size]byte
	expires int64
	ok      bool // hash holds the previous secret's hash
}

type retiredSecret struct {
	hash     [sha256.Size]byte
	replaced int64 // when, Unix microseconds
}

// noTime stands for the zero time.Time.
const noTime = math.MinInt64

func micros(t time.Time) int64 {
	if t.IsZero() {
		return noTime
	}
	return t.UnixMicro()
}

func instant(us int64) time.Time {
	if us == noTime {
		return time.Time{}
	}
	return time.UnixMicro(us).UTC()
}

// NewTable returns an empty table.
func NewTable() *Table {
	return &Table{
		byFullID: map[rowID]uint32{},
		fullHash: map[[sha256.Size]byte]uint32{}, previous: map[uint32]previousSecret{},
		retired: map[uint32][]retiredSecret{}, leaks: map[uint32]leakMark{},
		orgs: newInterner[string](), scopes: newInterner[string](), actors: newInterner[domain.Actor](),
	}
}

// Listing is the table's masked listing.
func (t *Table) Listing() *Listing { return &Listing{t: t} }

// Index is the table's verify index.
func (t *Table) Index() *VerifyIndex { return &VerifyIndex{t: t} }

func keyBytes(id string) [16]byte {
	if u, err := ulid.ParseStrict(strings.TrimPrefix(id, "key_")); err == nil && strings.HasPrefix(id, "key_") {
		return u
	}
	sum := sha256.Sum256([]byte(id))
	var b [16]byte
	copy(b[:], sum[:])
	b[0] ^= 0xff // apart from any ULID's bytes that a hash could equal
	return b
}

// find returns the row of org/id.
func (t *Table) find(org, id string) (uint32, bool) {
	o, ok := t.orgs.lookup(org)
	if !ok {
		return 0, false
	}
	rid := rowID{org: o, key: keyBytes(id)}
	slot, ok := t.byFullID[rid]
	if !ok {
		slot, ok = t.byID.get(rid.short())
	}
	if !ok || t.rows.at(slot).id != rid || t.text.get(t.rows.at(slot).keyID) != id {
		return 0, false
	}
	return slot, true
}

// ErrRefused is the error of an event a projection will not apply because
// it belongs to no key's history: signed, yet not chained to its key's
// last event (a copy of an earlier one published again), or the creation
// of a key that exists. The runner refuses such an event everywhere.
var ErrRefused = errors.New("refused")

// follows is domain.Key.Follows for a row: the event's prev_hash must name
// the key's last event, and a key is created once.
func (t *Table) follows(r *row, e domain.Event) bool {
	if e.Type == domain.TypeKeyCreated {
		return false
	}
	if r.flags&flagLast == 0 {
		return true // built from events not read back: nothing to compare
	}
	var prev [sha256.Size]byte
	n, err := hex.Decode(prev[:], []byte(e.PrevHash))
	return err == nil && n == sha256.Size && prev == r.last
}

// Reject notes that the event at seq was refused: no keyledger instance
// wrote it, or it belongs to no key's history.
func (t *Table) Reject(seq uint64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.refuse(seq)
}

func (t *Table) refuse(seq uint64) {
	if n := len(t.rejected); n == 0 || t.rejected[n-1] < seq {
		t.rejected = append(t.rejected, seq)
	}
}

// Judged says whether the event at seq was applied as keyledger's: known
// is false for a sequence the table has not reached.
func (t *Table) Judged(seq uint64) (trusted, known bool) {
	t.mu.RLock()
	defer t.mu.RUnlock()
	if seq > t.LastSeq() {
		return false, false
	}
	_, refused := slices.BinarySearch(t.rejected, seq)
	return !refused, true
}

// Apply folds one event into the table. A table shared by its listing and
// its index is fed by both: an event it already holds is skipped.
func (t *Table) Apply(e domain.Event) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if e.Seq != 0 && e.Seq <= t.LastSeq() {
		return nil
	}
	defer t.mark(e.Seq)
	if e.Data == nil && (!e.Trusted || e.Type == "") || domain.IsWebhookType(e.Type) {
		return nil // refused, or not an event, or a webhook endpoint's
	}
	slot, ok := t.find(e.OrgID, e.KeyID)
	if !ok {
		d, isNew := e.Data.(domain.KeyCreated)
		switch {
		case isNew && e.PrevHash == "":
			t.create(e, d)
			return nil
		case e.Data == nil:
			return nil // a type this code does not know, of no key it knows
		}
		t.refuse(e.Seq) // now, not when the runner hears of it: a read between would take it for judged trusted
		return fmt.Errorf("%w: %s for unknown key %s/%s", ErrRefused, e.Type, e.OrgID, e.KeyID)
	}
	r := t.rows.at(slot)
	if !t.follows(r, e) {
		t.refuse(e.Seq)
		return fmt.Errorf("%w: event %s of key %s does not follow the key's last event: a copy, or out of place", ErrRefused, e.ID, e.KeyID)
	}
	switch d := e.Data.(type) {
	case domain.KeyRotated:
		old, rotated := t.previous[slot]
		t.previous[slot] = previousSecret{hash: r.hash, expires: micros(d.PreviousSecretExpiresAt), ok: r.flags&flagHash != 0}
		if rotated && old.ok {
			t.retire(slot, retiredSecret{hash: old.hash, replaced: r.rotated})
		}
		r.flags |= flagRotated
		r.masked = t.text.add(d.Masked)
		r.rotated = micros(e.OccurredAt)
		t.setHash(slot, d.SecretHash)
	case domain.KeyRevoked:
		if r.flags&flagRevoked == 0 {
			t.countRevoked(r.id.org)
		}
		r.flags |= flagRevoked
		r.revoked = micros(e.OccurredAt)
	case domain.KeyLeakReported:
		t.leaks[slot] = leakMark{hash: d.SecretHash, url: d.URL, at: micros(e.OccurredAt)}
	}
	t.advance(r, e)
	return nil
}

func (t *Table) create(e domain.Event, d domain.KeyCreated) {
	o := t.orgs.add(e.OrgID)
	if int(o) == len(t.byOrg) {
		t.byOrg = append(t.byOrg, nil)
	}
	scopes := t.scopes.add(scopeKey(d.Scopes))
	if int(scopes) == len(t.sets) {
		// Shared by every key with these scopes: no room to append into.
		t.sets = append(t.sets, slices.Clip(d.Scopes))
	}
	slot := t.rows.add(row{
		id:      rowID{org: o, key: keyBytes(e.KeyID)},
		expires: micros(d.ExpiresAt), created: micros(e.OccurredAt), rotated: noTime, revoked: noTime,
		keyID: t.text.add(e.KeyID), name: t.text.add(d.Name), masked: t.text.add(d.Masked),
		scopes: scopes, actor: t.actors.add(e.Actor),
	})
	r := t.rows.at(slot)
	t.indexID(r.id, slot)
	t.setHash(slot, d.SecretHash)
	t.advance(r, e)
	// Key ids are ULIDs: in id order is in creation order, so a new key
	// almost always goes last.
	ids := t.byOrg[o]
	i := len(ids)
	for i > 0 && t.text.get(t.rows.at(ids[i-1]).keyID) > e.KeyID {
		i--
	}
	t.byOrg[o] = slices.Insert(ids, i, slot)
}

func (t *Table) indexID(id rowID, slot uint32) {
	if _, taken := t.byID.get(id.short()); taken {
		t.byFullID[id] = slot
		return
	}
	t.byID.put(id.short(), slot)
}

// setHash makes h the row's current secret and indexes it.
func (t *Table) setHash(slot uint32, h string) {
	r := t.rows.at(slot)
	sum, ok := domain.ParseHash(h)
	if !ok {
		r.flags &^= flagHash
		r.hash = [sha256.Size]byte{}
		return
	}
	r.flags |= flagHash
	r.hash = sum
	t.indexHash(sum, slot)
}

func (t *Table) indexHash(sum [sha256.Size]byte, slot uint32) {
	p := binary.LittleEndian.Uint64(sum[:8])
	if other, taken := t.byHash.get(p); taken && other != slot {
		t.fullHash[sum] = slot
		return
	}
	t.byHash.put(p, slot)
}

// retire puts a secret replaced before the key's previous one in front of
// its retired secrets, and forgets, index entries included, those that
// domain.MaxReplacedSecrets leaves out (as domain.Key.Apply does).
func (t *Table) retire(slot uint32, s retiredSecret) {
	old := t.retired[slot]
	keep := min(len(old), domain.MaxReplacedSecrets-2)
	list := make([]retiredSecret, 0, keep+1)
	list = append(list, s)
	t.retired[slot] = append(list, old[:keep]...)
	for _, gone := range old[keep:] {
		t.unindexHash(slot, gone.hash)
	}
}

// unindexHash removes a secret of the row that it forgot from the index.
func (t *Table) unindexHash(slot uint32, sum [sha256.Size]byte) {
	if owner, ok := t.fullHash[sum]; ok {
		if owner == slot {
			delete(t.fullHash, sum)
		}
		return
	}
	p := binary.LittleEndian.Uint64(sum[:8])
	if owner, ok := t.byHash.get(p); !ok || owner != slot || t.holdsPrefix(slot, p) {
		return // another key's, or another of this key's secrets shares its 8 bytes
	}
	t.byHash.del(p)
}

// holdsPrefix reports whether a secret the row still has begins with the
// 8 bytes p.
func (t *Table) holdsPrefix(slot uint32, p uint64) bool {
	first := func(sum [sha256.Size]byte) bool { return binary.LittleEndian.Uint64(sum[:8]) == p }
	if r := t.rows.at(slot); r.flags&flagHash != 0 && first(r.hash) {
		return true
	}
	if prev, ok := t.previous[slot]; ok && prev.ok && first(prev.hash) {
		return true
	}
	for _, old := range t.retired[slot] {
		if first(old.hash) {
			return true
		}
	}
	return false
}

func (t *Table) advance(r *row, e domain.Event) {
	if e.Seq != 0 {
		r.version = e.Seq
	}
	if e.Hash != "" {
		if n, err := hex.Decode(r.last[:], []byte(e.Hash)); err == nil && n == sha256.Size {
			r.flags |= flagLast
		}
	}
}

// lookup finds the row a secret's hash belongs to, if any key ever had it.
func (t *Table) lookup(sum [sha256.Size]byte) (uint32, bool) {
	if len(t.fullHash) > 0 {
		if slot, ok := t.fullHash[sum]; ok {
			return slot, true
		}
	}
	return t.byHash.get(binary.LittleEndian.Uint64(sum[:8]))
}

// match says which of the row's secrets sum is; ok is false when it is
// none of them (another secret whose first 8 bytes are the same), or one
// the key no longer remembers at now (domain.RemembersReplaced).
func (t *Table) match(slot uint32, sum [sha256.Size]byte, now time.Time) (m domain.SecretMatch, ok bool) {
	r := t.rows.at(slot)
	if r.flags&flagHash != 0 && r.hash == sum {
		return domain.CurrentSecret, true
	}
	if r.flags&flagRotated == 0 {
		return 0, false
	}
	if p := t.previous[slot]; p.ok && p.hash == sum {
		return domain.PreviousSecret, true
	}
	for i, old := range t.retired[slot] {
		if old.hash == sum {
			return domain.OlderSecret, domain.RemembersReplaced(i+1, instant(old.replaced), now)
		}
	}
	return 0, false
}

// key builds the domain's key from a row; withHashes adds the hashes as
// the domain writes them (commands need them, verifications do not).
// Strings point into the arena and the scope set is shared: callers must
// not change them.
func (t *Table) key(slot uint32, withHashes bool) domain.Key {
	r := t.rows.at(slot)
	k := domain.Key{
		ID: t.text.get(r.keyID), OrgID: t.orgs.values[r.id.org], Name: t.text.get(r.name),
		Scopes: t.sets[r.scopes], Masked: t.text.get(r.masked), ExpiresAt: instant(r.expires),
		CreatedAt: instant(r.created), CreatedBy: t.actors.values[r.actor],
		RotatedAt: instant(r.rotated), RevokedAt: instant(r.revoked), Revoked: r.flags&flagRevoked != 0,
		Version: r.version,
	}
	if m, ok := t.leaks[slot]; ok {
		k.LastLeak = &domain.Leak{SecretHash: m.hash, URL: m.url, At: instant(m.at)}
	}
	var p previousSecret
	rotated := r.flags&flagRotated != 0
	if rotated {
		p = t.previous[slot]
		k.PreviousExpiresAt = instant(p.expires)
	}
	if !withHashes {
		return k
	}
	if r.flags&flagHash != 0 {
		k.SecretHash = domain.FormatHash(r.hash)
	}
	if rotated && p.ok {
		k.PreviousSecretHash = domain.FormatHash(p.hash)
	}
	for _, old := range t.retired[slot] {
		k.Retired = append(k.Retired, domain.RetiredSecret{Hash: domain.FormatHash(old.hash), ReplacedAt: instant(old.replaced)})
	}
	if r.flags&flagLast != 0 {
		k.LastHash = hex.EncodeToString(r.last[:])
	}
	return k
}

func (t *Table) status(slot uint32, now time.Time) domain.Status {
	r := t.rows.at(slot)
	switch {
	case r.flags&flagRevoked != 0:
		return domain.StatusRevoked
	case r.expires != noTime && now.UnixMicro() >= r.expires:
		return domain.StatusExpired
	}
	return domain.StatusActive
}

// scopeKey names a scope set for interning; nil and empty differ.
func scopeKey(scopes []string) string {
	if scopes == nil {
		return "\x00nil"
	}
	return strings.Join(scopes, "\x00")
}

// interner numbers values in the order they first come. Consecutive
// events mostly name the same org, actor and scopes: the last value is
// compared before the map is looked up.
type interner[T comparable] struct {
	index  map[T]uint32
	values []T
	last   uint32
}

func newInterner[T comparable]() interner[T] { return interner[T]{index: map[T]uint32{}} }

// add numbers v; it runs under the table's write lock.
func (in *interner[T]) add(v T) uint32 {
	if i, ok := in.lookup(v); ok {
		in.last = i
		return i
	}
	i := uint32(len(in.values))
	in.index[v] = i
	in.values = append(in.values, v)
	in.last = i
	return i
}

// lookup finds v without changing anything: readers share the table.
func (in *interner[T]) lookup(v T) (uint32, bool) {
	if int(in.last) < len(in.values) && in.values[in.last] == v {
		return in.last, true
	}
	i, ok := in.index[v]
	return i, ok
}

// arena holds text in large chunks that are only ever appended to, so that
// strings can point into them without a copy and without the chunks ever
// changing under them.
type arena struct {
	chunks [][]byte
}

const chunkSize = 1 << 20

// textRef locates a string in the arena: chunk, offset and length.
type textRef struct {
	chunk uint16
	n     uint16
	off   uint32
}

// maxText is the longest string the arena holds; longer ones (only a
// corrupt event has them) are cut.
const maxText = 1<<16 - 1

func (a *arena) add(s string) textRef {
	if len(s) == 0 {
		return textRef{}
	}
	if len(s) > maxText {
		s = s[:maxText]
	}
	last := len(a.chunks) - 1
	if last < 0 || cap(a.chunks[last])-len(a.chunks[last]) < len(s) {
		a.chunks = append(a.chunks, make([]byte, 0, max(chunkSize, len(s))))
		last++
	}
	c := a.chunks[last]
	ref := textRef{chunk: uint16(last), off: uint32(len(c)), n: uint16(len(s))}
	a.chunks[last] = append(c, s...)
	return ref
}

func (a *arena) get(r textRef) string {
	if r.n == 0 {
		return ""
	}
	b := a.chunks[r.chunk][r.off : r.off+uint32(r.n)]
	return unsafe.String(&b[0], len(b))
}

// Hashes returns how many secret hashes the table holds, over every key:
// what the verify index costs in memory.
func (t *Table) Hashes() int {
	t.mu.RLock()
	defer t.mu.RUnlock()
	return t.byHash.len() + len(t.fullHash)
}
