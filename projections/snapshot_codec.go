package projections

import (
	"bufio"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"maps"
	"slices"

	"github.com/klauspost/compress/s2"

	"github.com/keyledger/keyledger/domain"
)

// tableImage is a table frozen for a snapshot: copied in a few
// milliseconds on the runner's goroutine, then encoded in the background
// while the table moves on. The arena's bytes are shared: they never change.
type tableImage struct {
	rows     rowChunks
	previous map[uint32]previousSecret
	byHash   hashIndex
	fullHash map[[sha256.Size]byte]uint32
	retired  map[uint32][]retiredSecret // the lists are shared: never changed in place
	orgs     []string
	byOrg    [][]uint32
	sets     [][]string
	actors   []domain.Actor
	chunks   [][]byte
	rejected []uint64
	leaks    map[uint32]leakMark
}

// image copies the table as it stands, and says as of which sequence.
func (t *Table) image() (*tableImage, uint64) {
	t.mu.RLock()
	defer t.mu.RUnlock()
	img := &tableImage{
		rows: t.rows.clone(), previous: maps.Clone(t.previous),
		byHash: t.byHash.clone(), fullHash: maps.Clone(t.fullHash), retired: maps.Clone(t.retired),
		orgs: slices.Clone(t.orgs.values), byOrg: make([][]uint32, len(t.byOrg)),
		sets: slices.Clone(t.sets), actors: slices.Clone(t.actors.values),
		chunks: slices.Clone(t.text.chunks), rejected: slices.Clone(t.rejected), leaks: maps.Clone(t.leaks),
	}
	for i, slots := range t.byOrg {
		img.byOrg[i] = slices.Clone(slots)
	}
	return img, t.LastSeq()
}

// install replaces the table's state with img, which it takes over, as of
// sequence seq.
func (t *Table) install(img *tableImage, seq uint64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.rows, t.previous, t.byHash, t.fullHash, t.retired = img.rows, img.previous, img.byHash, img.fullHash, img.retired
	t.byOrg, t.sets, t.text.chunks, t.rejected, t.leaks = img.byOrg, img.sets, img.chunks, img.rejected, img.leaks
	if t.leaks == nil {
		t.leaks = map[uint32]leakMark{}
	}
	t.orgs = newInterner[string]()
	for _, o := range img.orgs {
		t.orgs.add(o)
	}
	t.scopes = newInterner[string]()
	for _, set := range img.sets {
		t.scopes.add(scopeKey(set))
	}
	t.actors = newInterner[domain.Actor]()
	for _, a := range img.actors {
		t.actors.add(a)
	}
	t.byID, t.byFullID = newHashIndex(img.rows.n), map[rowID]uint32{}
	t.revokedByOrg = nil
	for slot := range uint32(img.rows.n) {
		r := img.rows.at(slot)
		t.indexID(r.id, slot)
		if r.flags&flagRevoked != 0 {
			t.countRevoked(r.id.org)
		}
	}
	t.mark(seq)
}

func (rc *rowChunks) clone() rowChunks {
	out := rowChunks{chunks: make([][]row, len(rc.chunks)), n: rc.n}
	for i, c := range rc.chunks {
		out.chunks[i] = slices.Clone(c)
	}
	return out
}

// The snapshot format, version 6, compressed with s2: a magic line, the
// header, then the table's parts, each count-prefixed, little-endian, and a
// CRC-32C of everything before it.
const snapshotMagic = "keyledger snapshot\n"

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

const rowBytes = 32 + 32 + 16 + 4 + 8 + 4*8 + 3*8 + 4 + 4 + 1

func encodeSnapshot(w io.Writer, h snapshotHeader, img *tableImage) error {
	zw := s2.NewWriter(w)
	e := &encoder{w: bufio.NewWriterSize(zw, 1<<16)}
	e.raw([]byte(snapshotMagic))
	e.u32(uint32(h.Version))
	e.u64(h.Seq)
	e.str(h.SeqHash)
	e.u64(uint64(h.Keys))
	e.u64(uint64(h.Taken))

	e.u64(uint64(len(img.orgs)))
	for _, o := range img.orgs {
		e.str(o)
	}
	e.u64(uint64(len(img.sets)))
	for _, set := range img.sets {
		if set == nil {
			e.u64(nilSet)
			continue
		}
		e.u64(uint64(len(set)))
		for _, s := range set {
			e.str(s)
		}
	}
	e.u64(uint64(len(img.actors)))
	for _, a := range img.actors {
		e.str(a.Kind)
		e.str(a.ID)
		e.str(a.Name)
	}
	e.u64(uint64(len(img.chunks)))
	for _, c := range img.chunks {
		e.u64(uint64(len(c)))
		e.raw(c)
	}
	e.u64(uint64(img.rows.n))
	var b [rowBytes]byte
	for slot := range uint32(img.rows.n) {
		putRow(b[:], img.rows.at(slot))
		e.raw(b[:])
	}
	e.u64(uint64(len(img.previous)))
	for slot, p := range img.previous {
		e.u32(slot)
		e.raw(p.hash[:])
		e.u64(uint64(p.expires))
		e.bool(p.ok)
	}
	e.u64(uint64(img.byHash.len()))
	img.byHash.each(func(prefix uint64, slot uint32) {
		e.u64(prefix)
		e.u32(slot)
	})
	e.u64(uint64(len(img.fullHash)))
	for sum, slot := range img.fullHash {
		e.raw(sum[:])
		e.u32(slot)
	}
	e.u64(uint64(len(img.retired)))
	for slot, list := range img.retired {
		e.u32(slot)
		e.u32(uint32(len(list)))
		for _, old := range list {
			e.raw(old.hash[:])
			e.u64(uint64(old.replaced))
		}
	}
	e.u64(uint64(len(img.byOrg)))
	for _, slots := range img.byOrg {
		e.u64(uint64(len(slots)))
		for _, slot := range slots {
			e.u32(slot)
		}
	}
	e.u64(uint64(len(img.rejected)))
	for _, seq := range img.rejected {
		e.u64(seq)
	}
	e.u64(uint64(len(img.leaks)))
	for slot, m := range img.leaks {
		e.u32(slot)
		e.str(m.hash)
		e.str(m.url)
		e.u64(uint64(m.at))
	}
	sum := e.crc
	e.u32(sum)
	if e.err == nil {
		e.err = e.w.Flush()
	}
	if e.err != nil {
		return e.err
	}
	return zw.Close()
}

// nilSet marks a nil scope set.
const nilSet = ^uint64(0)

func putRow(b []byte, r *row) {
	le := binary.LittleEndian
	copy(b[0:32], r.hash[:])
	copy(b[32:64], r.last[:])
	copy(b[64:80], r.id.key[:])
	le.PutUint32(b[80:], r.id.org)
	le.PutUint64(b[84:], r.version)
	le.PutUint64(b[92:], uint64(r.expires))
	le.PutUint64(b[100:], uint64(r.created))
	le.PutUint64(b[108:], uint64(r.rotated))
	le.PutUint64(b[116:], uint64(r.revoked))
	for i, ref := range []textRef{r.keyID, r.name, r.masked} {
		o := 124 + 8*i
		le.PutUint16(b[o:], ref.chunk)
		le.PutUint16(b[o+2:], ref.n)
		le.PutUint32(b[o+4:], ref.off)
	}
	le.PutUint32(b[148:], r.scopes)
	le.PutUint32(b[152:], r.actor)
	b[156] = r.flags
}

func getRow(b []byte) row {
	le := binary.LittleEndian
	r := row{
		version: le.Uint64(b[84:]),
		expires: int64(le.Uint64(b[92:])), created: int64(le.Uint64(b[100:])),
		rotated: int64(le.Uint64(b[108:])), revoked: int64(le.Uint64(b[116:])),
		scopes: le.Uint32(b[148:]), actor: le.Uint32(b[152:]), flags: b[156],
	}
	copy(r.hash[:], b[0:32])
	copy(r.last[:], b[32:64])
	copy(r.id.key[:], b[64:80])
	r.id.org = le.Uint32(b[80:])
	for i, ref := range []*textRef{&r.keyID, &r.name, &r.masked} {
		o := 124 + 8*i
		*ref = textRef{chunk: le.Uint16(b[o:]), n: le.Uint16(b[o+2:]), off: le.Uint32(b[o+4:])}
	}
	return r
}

var errCorrupt = errors.New("snapshot is corrupt")

func decodeSnapshot(r io.Reader) (snapshotHeader, *tableImage, error) {
	d := &decoder{r: bufio.NewReaderSize(s2.NewReader(r), 1<<16)}
	var h snapshotHeader
	magic := make([]byte, len(snapshotMagic))
	if d.raw(magic); d.err != nil || string(magic) != snapshotMagic {
		return h, nil, fmt.Errorf("not a snapshot this build can read (of an older version, or corrupt)")
	}
	h.Version = int(d.u32())
	if d.err == nil && h.Version != SnapshotVersion {
		return h, nil, nil // fits says why
	}
	h.Seq, h.SeqHash, h.Keys, h.Taken = d.u64(), d.str(), d.count(), int64(d.u64())

	img := &tableImage{}
	for n := d.count(); n > 0 && d.err == nil; n-- {
		img.orgs = append(img.orgs, d.str())
	}
	for n := d.count(); n > 0 && d.err == nil; n-- {
		size := d.u64()
		if size == nilSet {
			img.sets = append(img.sets, nil)
			continue
		}
		set := []string{}
		for m := d.limit(size, 1<<16); m > 0 && d.err == nil; m-- {
			set = append(set, d.str())
		}
		img.sets = append(img.sets, set)
	}
	for n := d.count(); n > 0 && d.err == nil; n-- {
		img.actors = append(img.actors, domain.Actor{Kind: d.str(), ID: d.str(), Name: d.str()})
	}
	for n := d.count(); n > 0 && d.err == nil; n-- {
		size := d.limit(d.u64(), 1<<27)
		c := make([]byte, size) // full: new text goes to a new chunk
		d.raw(c)
		img.chunks = append(img.chunks, c)
	}
	n := d.count()
	var b [rowBytes]byte
	rotated := 0 // rows that may hold older secrets
	for ; n > 0 && d.err == nil; n-- {
		d.raw(b[:])
		r := getRow(b[:])
		if r.flags&flagRotated != 0 {
			rotated++
		}
		img.rows.add(r)
	}
	n = d.count()
	img.previous = make(map[uint32]previousSecret, min(n, sizeHint))
	for ; n > 0 && d.err == nil; n-- {
		slot := d.u32()
		var p previousSecret
		d.raw(p.hash[:])
		p.expires, p.ok = int64(d.u64()), d.bool()
		img.previous[slot] = p
	}
	n = d.count()
	// Sized for every hash at once: the hashes come in the order of the
	// saved index's slots, sorted by the place they hash to, and put into
	// a smaller index that grows, they would all land in its first part
	// and pile into one run that each put probes to its end (quadratic:
	// a snapshot of ten million keys took minutes). A row holds its
	// current secret, its previous one, and when rotated up to
	// domain.MaxReplacedSecrets-1 older ones, all indexed; the older ones
	// are read after the index, so the size rests on the rows read (what
	// a table of them could index at most), not on the count alone.
	img.byHash = newHashIndex(min(n, img.rows.n+len(img.previous)+rotated*(domain.MaxReplacedSecrets-1)+sizeHint))
	for ; n > 0 && d.err == nil; n-- {
		prefix := d.u64()
		img.byHash.put(prefix, d.u32())
	}
	img.fullHash, img.retired = d.fullHashes(), d.retired()
	for n := d.count(); n > 0 && d.err == nil; n-- {
		m := d.count()
		slots := make([]uint32, 0, min(m, sizeHint))
		for ; m > 0 && d.err == nil; m-- {
			slots = append(slots, d.u32())
		}
		img.byOrg = append(img.byOrg, slots)
	}
	n = d.count()
	img.rejected = make([]uint64, 0, min(n, sizeHint))
	for ; n > 0 && d.err == nil; n-- {
		img.rejected = append(img.rejected, d.u64())
	}
	img.leaks = map[uint32]leakMark{}
	for n = d.count(); n > 0 && d.err == nil; n-- {
		slot := d.u32()
		img.leaks[slot] = leakMark{hash: d.str(), url: d.str(), at: int64(d.u64())}
	}
	sum := d.crc
	if got := d.u32(); d.err == nil && got != sum {
		return h, nil, fmt.Errorf("%w: checksum mismatch", errCorrupt)
	}
	if d.err != nil {
		return h, nil, fmt.Errorf("%w: %v", errCorrupt, d.err)
	}
	if _, err := d.r.ReadByte(); !errors.Is(err, io.EOF) {
		return h, nil, fmt.Errorf("%w: data after its end", errCorrupt)
	}
	if err := img.check(h); err != nil {
		return h, nil, fmt.Errorf("%w: %v", errCorrupt, err)
	}
	return h, img, nil
}

// check refuses an image whose references point nowhere, however it came
// to be: a snapshot must never build a wrong index.
func (img *tableImage) check(h snapshotHeader) error {
	if img.rows.n != h.Keys {
		return fmt.Errorf("%d keys, its header says %d", img.rows.n, h.Keys)
	}
	if !slices.IsSorted(img.rejected) || len(img.rejected) > 0 && img.rejected[len(img.rejected)-1] > h.Seq {
		return fmt.Errorf("its refused events are not in order, or beyond its sequence")
	}
	for slot := range img.leaks {
		if uint64(slot) >= uint64(img.rows.n) {
			return fmt.Errorf("a leak of row %d, of %d", slot, img.rows.n)
		}
	}
	if len(img.byOrg) != len(img.orgs) {
		return fmt.Errorf("%d org listings for %d orgs", len(img.byOrg), len(img.orgs))
	}
	text := func(r textRef) bool {
		return r.n == 0 || int(r.chunk) < len(img.chunks) && uint64(r.off)+uint64(r.n) <= uint64(len(img.chunks[r.chunk]))
	}
	for i := range uint32(img.rows.n) {
		r := img.rows.at(i)
		if int(r.id.org) >= len(img.orgs) || int(r.scopes) >= len(img.sets) || int(r.actor) >= len(img.actors) ||
			!text(r.keyID) || !text(r.name) || !text(r.masked) {
			return fmt.Errorf("key %d refers to nothing", i)
		}
	}
	slot := func(s uint32) bool { return int(s) < img.rows.n }
	for s := range img.previous {
		if !slot(s) {
			return fmt.Errorf("a previous secret of no key")
		}
	}
	var stray bool
	img.byHash.each(func(_ uint64, s uint32) { stray = stray || !slot(s) })
	if stray {
		return fmt.Errorf("a hash of no key")
	}
	for _, s := range img.fullHash {
		if !slot(s) {
			return fmt.Errorf("a hash of no key")
		}
	}
	for s := range img.retired {
		if !slot(s) {
			return fmt.Errorf("a retired secret of no key")
		}
	}
	listed := 0
	for o, slots := range img.byOrg {
		for _, s := range slots {
			if !slot(s) || img.rows.at(s).id.org != uint32(o) {
				return fmt.Errorf("org %d lists a key not its own", o)
			}
		}
		listed += len(slots)
	}
	if listed != img.rows.n {
		return fmt.Errorf("the listings hold %d keys of %d", listed, img.rows.n)
	}
	return nil
}

type encoder struct {
	w   *bufio.Writer
	crc uint32
	err error
	b   [8]byte
}

func (e *encoder) raw(b []byte) {
	if e.err != nil {
		return
	}
	e.crc = crc32.Update(e.crc, castagnoli, b)
	_, e.err = e.w.Write(b)
}

func (e *encoder) u64(v uint64) {
	binary.LittleEndian.PutUint64(e.b[:], v)
	e.raw(e.b[:8])
}

func (e *encoder) u32(v uint32) {
	binary.LittleEndian.PutUint32(e.b[:], v)
	e.raw(e.b[:4])
}

func (e *encoder) bool(v bool) {
	e.b[0] = 0
	if v {
		e.b[0] = 1
	}
	e.raw(e.b[:1])
}

func (e *encoder) str(s string) {
	e.u32(uint32(len(s)))
	e.raw([]byte(s))
}

type decoder struct {
	r   *bufio.Reader
	crc uint32
	err error
	b   [8]byte
}

func (d *decoder) raw(b []byte) {
	if d.err != nil {
		clear(b)
		return
	}
	if _, d.err = io.ReadFull(d.r, b); d.err != nil {
		clear(b)
		return
	}
	d.crc = crc32.Update(d.crc, castagnoli, b)
}

func (d *decoder) u64() uint64 {
	d.raw(d.b[:8])
	return binary.LittleEndian.Uint64(d.b[:8])
}

func (d *decoder) u32() uint32 {
	d.raw(d.b[:4])
	return binary.LittleEndian.Uint32(d.b[:4])
}

func (d *decoder) bool() bool {
	d.raw(d.b[:1])
	return d.b[0] == 1
}

func (d *decoder) str() string {
	n := d.limit(uint64(d.u32()), 1<<20)
	if n == 0 {
		return ""
	}
	b := make([]byte, n)
	d.raw(b)
	return string(b)
}

// sizeHint bounds what a count read from a snapshot may reserve ahead:
// past it, maps and slices grow as the items actually come, so that a
// corrupt count fails at the end of the data rather than on a huge
// allocation.
var sizeHint = 1 << 20 // a variable for tests only

// fullHashes reads a map of whole hashes to rows.
func (d *decoder) fullHashes() map[[sha256.Size]byte]uint32 {
	n := d.count()
	out := make(map[[sha256.Size]byte]uint32, min(n, 1<<16))
	for ; n > 0 && d.err == nil; n-- {
		var sum [sha256.Size]byte
		d.raw(sum[:])
		out[sum] = d.u32()
	}
	return out
}

// retired reads each key's retired secrets; a list longer than a key
// keeps is refused.
func (d *decoder) retired() map[uint32][]retiredSecret {
	n := d.count()
	out := make(map[uint32][]retiredSecret, min(n, 1<<16))
	for ; n > 0 && d.err == nil; n-- {
		slot := d.u32()
		list := make([]retiredSecret, d.limit(uint64(d.u32()), domain.MaxReplacedSecrets-1))
		for i := range list {
			d.raw(list[i].hash[:])
			list[i].replaced = int64(d.u64())
		}
		out[slot] = list
	}
	return out
}

// count reads a count of items; on an error it is zero, so loops end.
func (d *decoder) count() int { return d.limit(d.u64(), 1<<32) }

// limit refuses a length over most, which no snapshot holds (a corrupt
// one), before anything is allocated for it.
func (d *decoder) limit(n, most uint64) int {
	if d.err != nil {
		return 0
	}
	if n > most {
		d.err = fmt.Errorf("a length of %d", n)
		return 0
	}
	return int(n)
}
