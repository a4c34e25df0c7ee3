package http

import (
	"net/http"

	"github.com/keyledger/keyledger/domain"
	"github.com/keyledger/keyledger/events"
)

// maxKeyLen is far above any key this service mints; longer strings are
// MALFORMED without being hashed.
const maxKeyLen = 256

type verifyRequest struct {
	Key string `json:"key"`
}

func (s *Server) verify(w http.ResponseWriter, r *http.Request) {
	var req verifyRequest
	if err := decode(w, r, &req, false); err != nil {
		s.fail(w, r, err)
		return
	}
	if err := s.minSeq(r); err != nil {
		s.fail(w, r, err)
		return
	}
	view := VerifyView{Code: domain.VerifyMalformed}
	if len(req.Key) <= maxKeyLen {
		res := s.Index.Verify(req.Key, s.Now())
		view = VerifyView{Valid: res.Valid(), Code: res.Code, Deprecated: res.Deprecated, ExpiresAt: events.OptionalTime(res.ExpiresAt)}
		if res.Valid() {
			s.Usage.Touch(res.Key.OrgID, res.Key.ID, s.Now())
		}
		if res.Key.ID != "" {
			view.OrgID, view.KeyID, view.Name, view.Scopes = &res.Key.OrgID, &res.Key.ID, &res.Key.Name, res.Key.Scopes
		}
	}
	s.metrics.verification(view.Code)
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, http.StatusOK, view)
}

// whoami answers the key of Authorization: Bearer <key>, if it is valid.
// Failures spend the same per-address budget as the manager endpoints.
func (s *Server) whoami(w http.ResponseWriter, r *http.Request) {
	if err := s.minSeq(r); err != nil {
		s.fail(w, r, err)
		return
	}
	var k domain.Key
	if !s.throttled(w, r, func() (err error) { k, err = s.bearerKey(r); return err }) {
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, http.StatusOK, s.view(k, s.Now()))
}
