package events

// checkpointFields are a version 2 checkpoint's names, as Checkpoint's
// tags give them.
var checkpointFields = []string{"version", "from_seq", "to_seq", "seqs", "hashes", "untrusted", "chain", "prev_checkpoint", "signed_at", "key_id"}

// decodeCheckpointFast reads a checkpoint as this package writes it, in one
// pass without reflection: a full replay reads one per 4,096 events, each
// holding their hashes (some 175 KB for a full one), which encoding/json
// would scan twice. It reports false, having decided nothing, for anything
// else (unknown or repeated names, escapes, nulls where a number or a
// string goes, numbers of more than 19 digits), which readCheckpointV2 then
// reads with encoding/json: for every body both accept, both give the same
// checkpoint (FuzzDecodeCheckpointFast holds them to it).
func decodeCheckpointFast(body []byte) (Checkpoint, bool) {
	p := parser{b: body, text: string(body)}
	var cp Checkpoint
	_, ok := p.fields(checkpointFields, func(i int) bool {
		switch i {
		case 0:
			cp.Version = p.smallInt()
		case 1:
			cp.FromSeq = p.seq()
		case 2:
			cp.ToSeq = p.seq()
		case 3:
			return p.list(func() bool {
				var r [2]uint64
				if !p.byte('[') {
					return false
				}
				r[0] = p.seq()
				if !p.byte(',') {
					return false
				}
				r[1] = p.seq()
				cp.Seqs = append(cp.Seqs, r)
				return p.byte(']')
			}, func() { cp.Seqs = [][2]uint64{} })
		case 4:
			cp.Hashes = p.str()
		case 5:
			return p.list(func() bool {
				cp.Untrusted = append(cp.Untrusted, p.seq())
				return true
			}, func() { cp.Untrusted = []uint64{} })
		case 6:
			cp.Chain = p.str()
		case 7:
			cp.PrevCheckpoint = p.str()
		case 8:
			cp.SignedAt = p.str()
		case 9:
			cp.KeyID = p.str()
		}
		return true
	})
	return cp, ok && p.ok
}

// seq reads a whole number of at most 19 digits (below 2^64, always).
func (p *parser) seq() uint64 {
	p.space()
	var n uint64
	digits := 0
	for p.i < len(p.b) && '0' <= p.b[p.i] && p.b[p.i] <= '9' {
		if digits == 19 {
			p.ok = false
			return 0
		}
		n = n*10 + uint64(p.b[p.i]-'0')
		p.i++
		digits++
	}
	if digits == 0 || (digits > 1 && p.b[p.i-digits] == '0') {
		p.ok = false
	}
	if p.i < len(p.b) && (p.b[p.i] == '.' || p.b[p.i] == 'e' || p.b[p.i] == 'E') {
		p.ok = false
	}
	return n
}

// list reads null (leaving the slice nil, as encoding/json does) or an
// array, calling empty first for an array (so that [] is an empty slice,
// not nil) and item for each element.
func (p *parser) list(item func() bool, empty func()) bool {
	if p.null() {
		return true
	}
	if !p.byte('[') {
		return false
	}
	empty()
	if p.byte(']') {
		return true
	}
	for {
		if !item() || !p.ok {
			return false
		}
		if p.byte(',') {
			continue
		}
		return p.byte(']')
	}
}
