package projections

// hashIndex maps 8 bytes (of a secret's SHA-256, of a key id) to a row: an
// open-addressing table with linear probing in one flat array. A look-up
// costs one cache miss here where a general map costs two or three, and
// the table holds no pointer. Keys are mixed (Fibonacci hashing) before
// they pick a place: key ids minted in one millisecond are consecutive
// numbers, which linear probing alone would pile up.
type hashIndex struct {
	entries []hashEntry
	n       int
	shift   uint // 64 - log2(len(entries))
	// probed counts the entries puts looked at, growth included (for
	// tests: a pile shows as puts probing far).
	probed int
}

func (h *hashIndex) place(key uint64) uint64 { return (key * 0x9e3779b97f4a7c15) >> h.shift }

// hashEntry is one mapping; slot is the row's number plus one, zero for
// an empty entry.
type hashEntry struct {
	lo, hi uint32 // the 8 bytes
	slot   uint32
}

func (e hashEntry) key() uint64 { return uint64(e.hi)<<32 | uint64(e.lo) }

// newHashIndex returns an index with room for n mappings.
func newHashIndex(n int) hashIndex {
	size, bits := 1024, uint(10)
	for size*4 < n*5 { // keep the load under 0.8
		size *= 2
		bits++
	}
	return hashIndex{entries: make([]hashEntry, size), shift: 64 - bits}
}

func (h *hashIndex) len() int { return h.n }

// get returns the row mapped to key.
func (h *hashIndex) get(key uint64) (uint32, bool) {
	if len(h.entries) == 0 {
		return 0, false
	}
	mask := uint64(len(h.entries) - 1)
	for i := h.place(key); ; i = (i + 1) & mask {
		e := &h.entries[i]
		if e.slot == 0 {
			return 0, false
		}
		if e.key() == key {
			return e.slot - 1, true
		}
	}
}

// put maps key to slot, replacing any mapping of key.
func (h *hashIndex) put(key uint64, slot uint32) {
	if len(h.entries) == 0 || (h.n+1)*5 > len(h.entries)*4 {
		h.grow()
	}
	mask := uint64(len(h.entries) - 1)
	for i := h.place(key); ; i = (i + 1) & mask {
		h.probed++
		e := &h.entries[i]
		if e.slot == 0 {
			*e = hashEntry{lo: uint32(key), hi: uint32(key >> 32), slot: slot + 1}
			h.n++
			return
		}
		if e.key() == key {
			e.slot = slot + 1
			return
		}
	}
}

// del removes the mapping of key, if there is one. The entries after it
// that probed past it move back into the gap, so that no look-up stops
// short of them (deletion without tombstones, for linear probing).
func (h *hashIndex) del(key uint64) {
	if len(h.entries) == 0 {
		return
	}
	mask := uint64(len(h.entries) - 1)
	i := h.place(key)
	for h.entries[i].key() != key {
		if h.entries[i].slot == 0 {
			return
		}
		i = (i + 1) & mask
	}
	if h.entries[i].slot == 0 {
		return
	}
	for j := (i + 1) & mask; h.entries[j].slot != 0; j = (j + 1) & mask {
		// The entry at j may fill the gap at i if i lies on its probe
		// path: from its place to j.
		if (j-h.place(h.entries[j].key()))&mask >= (j-i)&mask {
			h.entries[i] = h.entries[j]
			i = j
		}
	}
	h.entries[i] = hashEntry{}
	h.n--
}

func (h *hashIndex) grow() {
	old, probed := h.entries, h.probed
	*h = newHashIndex(max(2*h.n, 1024))
	h.probed = probed
	for _, e := range old {
		if e.slot != 0 {
			h.put(e.key(), e.slot-1)
		}
	}
}

// each calls fn with every mapping.
func (h *hashIndex) each(fn func(key uint64, slot uint32)) {
	for _, e := range h.entries {
		if e.slot != 0 {
			fn(e.key(), e.slot-1)
		}
	}
}

func (h *hashIndex) clone() hashIndex {
	return hashIndex{entries: append([]hashEntry(nil), h.entries...), n: h.n, shift: h.shift}
}
