package http

import (
	"bytes"
	"io"
	"net/http"
	"strconv"
	"sync"
	"unicode/utf8"

	"github.com/keyledger/keyledger/domain"
	"github.com/keyledger/keyledger/events"
)

// maxKeyLen is far above any key this service mints; longer strings are
// MALFORMED without being hashed.
const maxKeyLen = 256

type verifyRequest struct {
	Key string `json:"key"`
}

// verify answers POST /v1/verify, the hottest path: the usual request, a
// small {"key":"…"} as application/json, is read and answered without
// reflection; any other goes through the general decoder, with the same
// answers, errors included.
func (s *Server) verify(w http.ResponseWriter, r *http.Request) {
	req, err := s.verifyRequest(w, r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	if err := s.minSeq(r); err != nil {
		s.fail(w, r, err)
		return
	}
	view := VerifyView{Code: domain.VerifyMalformed}
	if len(req.Key) <= maxKeyLen {
		now := s.Now()
		res := s.Index.Verify(req.Key, now)
		view = VerifyView{Valid: res.Valid(), Code: res.Code, Deprecated: res.Deprecated, ExpiresAt: events.OptionalTime(res.ExpiresAt)}
		if res.Valid() {
			s.Usage.Touch(res.Key.OrgID, res.Key.ID, now)
		}
		s.recordOutcome(r, res, now)
		if res.Key.ID != "" {
			view.OrgID, view.KeyID, view.Name, view.Scopes = &res.Key.OrgID, &res.Key.ID, &res.Key.Name, res.Key.Scopes
		}
	}
	s.metrics.verification(view.Code)
	h := w.Header()
	h["Cache-Control"] = noStore
	h["Content-Type"] = jsonType
	buf := answerBuffers.Get().(*[]byte)
	b := appendVerifyView((*buf)[:0], &view)
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(b)
	*buf = b
	answerBuffers.Put(buf)
}

// smallBody is the most a verify request is read ahead for its fast path.
const smallBody = 1024

var (
	bodyBuffers   = sync.Pool{New: func() any { b := make([]byte, smallBody); return &b }}
	answerBuffers = sync.Pool{New: func() any { b := make([]byte, 0, 512); return &b }}
)

// verifyRequest reads the request: a small JSON body of exactly one "key"
// string without escapes is taken as it is; anything else is handed, as
// read, to decode.
func (s *Server) verifyRequest(w http.ResponseWriter, r *http.Request) (verifyRequest, error) {
	var req verifyRequest
	if r.Header.Get("Content-Type") != "application/json" || r.ContentLength <= 0 || r.ContentLength > smallBody {
		return req, decode(w, r, &req, false)
	}
	buf := bodyBuffers.Get().(*[]byte)
	defer bodyBuffers.Put(buf)
	body := (*buf)[:r.ContentLength]
	if _, err := io.ReadFull(r.Body, body); err != nil {
		return req, bodyError(err)
	}
	if key, ok := plainKeyBody(body); ok {
		req.Key = string(key)
		return req, nil
	}
	r.Body = io.NopCloser(bytes.NewReader(bytes.Clone(body)))
	return req, decode(w, r, &req, false)
}

// plainKeyBody returns the value of a body {"key":"…"}, with any JSON
// whitespace around the tokens, whose value holds no escape and no
// control character; ok is false for any other body.
func plainKeyBody(b []byte) (key []byte, ok bool) {
	i := skipSpace(b, 0)
	if !bytes.HasPrefix(b[i:], []byte(`{`)) {
		return nil, false
	}
	i = skipSpace(b, i+1)
	if !bytes.HasPrefix(b[i:], []byte(`"key"`)) {
		return nil, false
	}
	i = skipSpace(b, i+len(`"key"`))
	if i >= len(b) || b[i] != ':' {
		return nil, false
	}
	i = skipSpace(b, i+1)
	if i >= len(b) || b[i] != '"' {
		return nil, false
	}
	start := i + 1
	end := start
	for ; end < len(b) && b[end] != '"'; end++ {
		if b[end] == '\\' || b[end] < 0x20 {
			return nil, false
		}
	}
	if end >= len(b) || !utf8.Valid(b[start:end]) {
		return nil, false
	}
	i = skipSpace(b, end+1)
	if i >= len(b) || b[i] != '}' {
		return nil, false
	}
	return b[start:end], skipSpace(b, i+1) == len(b)
}

func skipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

// appendVerifyView writes v as encoding/json would (the same bytes, the
// newline of an Encoder included), without reflection.
func appendVerifyView(b []byte, v *VerifyView) []byte {
	b = append(b, `{"valid":`...)
	b = strconv.AppendBool(b, v.Valid)
	b = append(b, `,"code":`...)
	b = appendJSONString(b, v.Code)
	b = append(b, `,"org_id":`...)
	b = appendOptionalString(b, v.OrgID)
	b = append(b, `,"key_id":`...)
	b = appendOptionalString(b, v.KeyID)
	b = append(b, `,"name":`...)
	b = appendOptionalString(b, v.Name)
	b = append(b, `,"scopes":`...)
	if v.Scopes == nil {
		b = append(b, "null"...)
	} else {
		b = append(b, '[')
		for i, s := range v.Scopes {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendJSONString(b, s)
		}
		b = append(b, ']')
	}
	b = append(b, `,"expires_at":`...)
	b = appendOptionalString(b, v.ExpiresAt)
	b = append(b, `,"deprecated":`...)
	b = strconv.AppendBool(b, v.Deprecated)
	return append(b, "}\n"...)
}

func appendOptionalString(b []byte, s *string) []byte {
	if s == nil {
		return append(b, "null"...)
	}
	return appendJSONString(b, *s)
}

const hexDigits = "0123456789abcdef"

// appendJSONString quotes s as encoding/json does by default: HTML-safe
// (<, > and & escaped), U+2028 and U+2029 escaped, invalid UTF-8 replaced.
func appendJSONString(b []byte, s string) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' && c != '<' && c != '>' && c != '&' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			case '\b':
				b = append(b, '\\', 'b')
			case '\f':
				b = append(b, '\\', 'f')
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hexDigits[r&0xf])
			i += size
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}

// whoami answers the key of Authorization: Bearer <key>, if it is valid.
// Failures spend the same per-address budget as the manager endpoints.
// The credential is checked before ?min_seq is read: an unauthenticated
// request never waits.
func (s *Server) whoami(w http.ResponseWriter, r *http.Request) {
	var k domain.Key
	if !s.throttled(w, r, func() (err error) { k, _, err = s.bearerKey(r); return err }) {
		return
	}
	if err := s.minSeq(r); err != nil {
		s.fail(w, r, err)
		return
	}
	w.Header()["Cache-Control"] = noStore
	writeJSON(w, http.StatusOK, s.view(k, s.Now()))
}
