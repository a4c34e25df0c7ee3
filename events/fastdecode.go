package events

import (
	"time"

	"github.com/keyledger/keyledger/domain"
)

// decodeFast reads an envelope as this package writes it — every field
// once, lower-case names, strings without escapes, instants in TimeLayout
// — in one pass without reflection: a full replay decodes a million of
// them. It reports false, having decided nothing, for anything else
// (unknown fields or types, escapes, nulls where a string goes, other
// instants), which Decode then reads with encoding/json: for every body
// both accept, both give the same event (FuzzDecodeFast holds them to it).
func decodeFast(body []byte, seq uint64) (domain.Event, bool) {
	return decodeFastIn(body, seq, nil)
}

// decodeFastIn is decodeFast taking the strings that repeat from event to
// event (org ids, actors, scopes) from in, when not nil, rather than
// allocating them again: a replay holds one in.
func decodeFastIn(body []byte, seq uint64, in *interner) (domain.Event, bool) {
	// One copy of the body, of which every string of the event is a part.
	text := string(body)
	p := parser{b: body, text: text, in: in}
	e := domain.Event{Seq: seq}
	var data []byte
	var dataAt int
	seen, ok := p.fields(envelopeFields, func(i int) bool {
		switch i {
		case 0:
			e.ID = p.str()
		case 1:
			var ok bool
			e.Type, ok = p.eventType()
			return ok
		case 2:
			e.SchemaVersion = p.smallInt()
		case 3:
			e.OrgID = p.common()
		case 4:
			e.KeyID = p.str()
		case 5:
			var ok bool
			e.OccurredAt, ok = p.instant()
			return ok
		case 6:
			return p.actor(&e.Actor)
		case 7:
			e.PrevHash = p.str()
		case 8:
			p.space()
			dataAt = p.i
			var ok bool
			data, ok = p.rawObject()
			return ok
		}
		return p.ok
	})
	// Every field but prev_hash, which older events may lack.
	if !ok || seen|1<<7 != all(envelopeFields) {
		return e, false
	}
	d := parser{b: data, text: text[dataAt : dataAt+len(data)], in: in}
	switch e.Type {
	case domain.TypeKeyCreated:
		var c domain.KeyCreated
		seen, ok := d.fields(createdFields, func(i int) bool {
			var ok bool
			switch i {
			case 0:
				c.Name, ok = d.str(), d.ok
			case 1:
				c.Scopes, ok = d.strings()
			case 2:
				c.SecretHash, ok = d.str(), d.ok
			case 3:
				c.Masked, ok = d.str(), d.ok
			case 4:
				c.ExpiresAt, ok = d.optionalInstant()
			}
			return ok
		})
		e.Data = c
		return e, ok && seen == all(createdFields)
	case domain.TypeKeyRotated:
		var r domain.KeyRotated
		seen, ok := d.fields(rotatedFields, func(i int) bool {
			var ok bool
			switch i {
			case 0:
				r.SecretHash, ok = d.str(), d.ok
			case 1:
				r.Masked, ok = d.str(), d.ok
			case 2:
				r.PreviousSecretExpiresAt, ok = d.optionalInstant()
			}
			return ok
		})
		e.Data = r
		return e, ok && seen == all(rotatedFields)
	case domain.TypeKeyRevoked:
		var r domain.KeyRevoked
		seen, ok := d.fields(revokedFields, func(int) bool {
			r.Reason = d.str()
			return d.ok
		})
		e.Data = r
		return e, ok && seen == all(revokedFields)
	}
	return e, false // a type this code does not know: encoding/json's way
}

// The names decodeFast reads, in the order of their bits in what fields
// reports seen.
var (
	envelopeFields = []string{"event_id", "type", "schema_version", "org_id", "key_id", "occurred_at", "actor", "prev_hash", "data"}
	createdFields  = []string{"name", "scopes", "secret_hash", "masked", "expires_at"}
	rotatedFields  = []string{"secret_hash", "masked", "previous_secret_expires_at"}
	revokedFields  = []string{"reason"}
)

// all is the seen mask of every one of names.
func all(names []string) uint32 { return 1<<len(names) - 1 }

// fields reads an object whose names are all among names, each at most
// once ("seq", or a name encoding/json might match ignoring case, is
// refused), reading each value with read(its index); it reports which
// names were seen. The object must be the whole input.
func (p *parser) fields(names []string, read func(i int) bool) (seen uint32, ok bool) {
	p.ok = true
	if !p.byte('{') {
		return 0, false
	}
	if p.byte('}') {
		p.space()
		return 0, p.i == len(p.b)
	}
	for {
		key := p.rawStr()
		if !p.ok || !p.byte(':') {
			return seen, false
		}
		i := nameIndex(names, key)
		if i < 0 || seen&(1<<i) != 0 || !read(i) || !p.ok {
			return seen, false
		}
		seen |= 1 << i
		if p.byte(',') {
			continue
		}
		if !p.byte('}') {
			return seen, false
		}
		p.space()
		return seen, p.i == len(p.b)
	}
}

func nameIndex(names []string, key []byte) int {
	for i, name := range names {
		if string(key) == name {
			return i
		}
	}
	return -1
}

// parser reads the subset of JSON decodeFast accepts. ok turns false, for
// good, at the first thing outside it.
type parser struct {
	b    []byte
	text string // b as a string: what str returns parts of
	i    int
	ok   bool
	in   *interner
}

// interner hands out one string for each text it has seen, up to a bound.
type interner map[string]string

const internBound = 4096

func (in *interner) get(b []byte) string {
	if *in == nil {
		*in = interner{}
	}
	if s, ok := (*in)[string(b)]; ok {
		return s
	}
	s := string(b)
	if len(*in) >= internBound {
		clear(*in)
	}
	(*in)[s] = s
	return s
}

// common reads a string that often repeats.
func (p *parser) common() string {
	s := p.rawStr()
	if !p.ok {
		return ""
	}
	if p.in == nil {
		return string(s)
	}
	return p.in.get(s)
}

func (p *parser) space() {
	for p.i < len(p.b) && (p.b[p.i] == ' ' || p.b[p.i] == '\t' || p.b[p.i] == '\n' || p.b[p.i] == '\r') {
		p.i++
	}
}

func (p *parser) byte(c byte) bool {
	p.space()
	if p.i < len(p.b) && p.b[p.i] == c {
		p.i++
		return true
	}
	return false
}

// rawStr reads a string without escapes or control characters.
func (p *parser) rawStr() []byte {
	if !p.byte('"') {
		p.ok = false
		return nil
	}
	start := p.i
	for p.i < len(p.b) {
		c := p.b[p.i]
		switch {
		case c == '"':
			p.i++
			return p.b[start : p.i-1]
		case c == '\\' || c < 0x20 || c >= 0x80:
			// Escapes, and bytes that may be invalid UTF-8 (which
			// encoding/json replaces): its way.
			p.ok = false
			return nil
		}
		p.i++
	}
	p.ok = false
	return nil
}

// eventType reads a type, without a copy for the types this code knows.
func (p *parser) eventType() (domain.EventType, bool) {
	s := p.rawStr()
	if !p.ok {
		return "", false
	}
	for _, t := range []domain.EventType{domain.TypeKeyCreated, domain.TypeKeyRotated, domain.TypeKeyRevoked} {
		if string(s) == string(t) {
			return t, true
		}
	}
	return domain.EventType(s), true
}

func (p *parser) str() string {
	s := p.rawStr()
	if !p.ok || len(s) == 0 {
		return ""
	}
	end := p.i - 1 // the closing quote
	return p.text[end-len(s) : end]
}

// smallInt reads a whole number of at most nine digits.
func (p *parser) smallInt() int {
	p.space()
	n, digits := 0, 0
	for p.i < len(p.b) && '0' <= p.b[p.i] && p.b[p.i] <= '9' && digits < 10 {
		n = n*10 + int(p.b[p.i]-'0')
		p.i++
		digits++
	}
	if digits == 0 || digits > 9 || (digits > 1 && p.b[p.i-digits] == '0') {
		p.ok = false
	}
	if p.i < len(p.b) && (p.b[p.i] == '.' || p.b[p.i] == 'e' || p.b[p.i] == 'E') {
		p.ok = false
	}
	return n
}

func (p *parser) null() bool {
	p.space()
	if len(p.b)-p.i >= 4 && string(p.b[p.i:p.i+4]) == "null" {
		p.i += 4
		return true
	}
	return false
}

func (p *parser) instant() (time.Time, bool) {
	s := p.rawStr()
	if !p.ok {
		return time.Time{}, false
	}
	return parseInstant(s)
}

func (p *parser) optionalInstant() (time.Time, bool) {
	if p.null() {
		return time.Time{}, true
	}
	return p.instant()
}

func (p *parser) strings() ([]string, bool) {
	if p.null() {
		return nil, true
	}
	if !p.byte('[') {
		return nil, false
	}
	out := []string{}
	if p.byte(']') {
		return out, true
	}
	for {
		s := p.common()
		if !p.ok {
			return nil, false
		}
		out = append(out, s)
		if p.byte(',') {
			continue
		}
		return out, p.byte(']')
	}
}

func (p *parser) actor(a *domain.Actor) bool {
	// The actor is an object inside the envelope: read it in place.
	inner := parser{b: p.b, text: p.text, i: p.i, ok: true, in: p.in}
	if !inner.byte('{') {
		return false
	}
	var seen uint8
	for {
		name := inner.rawStr()
		if !inner.ok || !inner.byte(':') {
			return false
		}
		v := inner.common()
		if !inner.ok {
			return false
		}
		var bit uint8
		switch string(name) {
		case "kind":
			bit, a.Kind = 1<<0, v
		case "id":
			bit, a.ID = 1<<1, v
		case "name":
			bit, a.Name = 1<<2, v
		default:
			return false
		}
		if seen&bit != 0 {
			return false
		}
		seen |= bit
		if inner.byte(',') {
			continue
		}
		if !inner.byte('}') || seen != 1<<3-1 {
			return false
		}
		p.i = inner.i
		return true
	}
}

// rawObject returns the bytes of a flat object value (strings, numbers,
// null and arrays of strings inside; no nested object), for its type's
// reader.
func (p *parser) rawObject() ([]byte, bool) {
	p.space()
	start := p.i
	if p.i >= len(p.b) || p.b[p.i] != '{' {
		return nil, false
	}
	inString := false
	for p.i++; p.i < len(p.b); p.i++ {
		c := p.b[p.i]
		switch {
		case inString && c == '\\':
			return nil, false
		case c == '"':
			inString = !inString
		case !inString && c == '{':
			return nil, false
		case !inString && c == '}':
			p.i++
			return p.b[start:p.i], true
		}
	}
	return nil, false
}

// parseInstant reads exactly TimeLayout in UTC ("2006-01-02T15:04:05.000000Z"),
// as time.Parse would, or reports false.
func parseInstant(s []byte) (time.Time, bool) {
	if len(s) != len("2006-01-02T15:04:05.000000Z") || s[4] != '-' || s[7] != '-' || s[10] != 'T' ||
		s[13] != ':' || s[16] != ':' || s[19] != '.' || s[26] != 'Z' {
		return time.Time{}, false
	}
	num := func(from, to int) (int, bool) {
		n := 0
		for _, c := range s[from:to] {
			if c < '0' || c > '9' {
				return 0, false
			}
			n = n*10 + int(c-'0')
		}
		return n, true
	}
	year, ok1 := num(0, 4)
	month, ok2 := num(5, 7)
	day, ok3 := num(8, 10)
	hour, ok4 := num(11, 13)
	minute, ok5 := num(14, 16)
	sec, ok6 := num(17, 19)
	micro, ok7 := num(20, 26)
	if !(ok1 && ok2 && ok3 && ok4 && ok5 && ok6 && ok7) || month < 1 || month > 12 || day < 1 ||
		day > daysIn(time.Month(month), year) || hour > 23 || minute > 59 || sec > 59 {
		return time.Time{}, false
	}
	return time.Date(year, time.Month(month), day, hour, minute, sec, micro*1000, time.UTC), true
}

func daysIn(m time.Month, year int) int {
	return time.Date(year, m+1, 0, 0, 0, 0, 0, time.UTC).Day()
}
