package http

import (
	"embed"
	"net/http"
	"path"

	"github.com/go-chi/chi/v5"

	"github.com/keyledger/keyledger/domain"
)

// pageFiles is the manager page: plain HTML, CSS and JavaScript, embedded,
// so that it works offline and loads nothing from elsewhere.
//
//go:embed page
var pageFiles embed.FS

// pageCSP lets the page load its own script and style and call this
// service, and nothing else.
const pageCSP = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; " +
	"form-action 'none'; base-uri 'none'; frame-ancestors 'none'"

// assetTypes are the kinds of file the page loads, by extension: the page's
// own HTML is served only at its route, with its own policy.
var assetTypes = map[string]string{
	".css": "text/css; charset=utf-8",
	".js":  "text/javascript; charset=utf-8",
}

func (s *Server) pageRoutes(r chi.Router) {
	r.Get("/{orgId}/configuration/api-keys", s.page)
	r.Get("/assets/keyledger/{file}", s.asset)
}

// asset serves the page's script and style. Any other name is answered
// like every unknown path: 404 with the JSON error body.
func (s *Server) asset(w http.ResponseWriter, r *http.Request) {
	name := chi.URLParam(r, "file")
	typ, ok := assetTypes[path.Ext(name)]
	body, err := pageFiles.ReadFile("page/" + name)
	if !ok || err != nil {
		s.fail(w, r, domain.Errorf(domain.ENOTFOUND, "no such asset"))
		return
	}
	w.Header().Set("Content-Type", typ)
	_, _ = w.Write(body)
}

// page serves the "Settings → API" page of an org. It holds no data: the
// script signs in and calls the API like any client.
func (s *Server) page(w http.ResponseWriter, r *http.Request) {
	if err := domain.ValidateOrgID(chi.URLParam(r, "orgId")); err != nil {
		s.fail(w, r, domain.Errorf(domain.ENOTFOUND, "no such page"))
		return
	}
	html, err := pageFiles.ReadFile("page/index.html")
	if err != nil {
		s.fail(w, r, domain.Wrap(domain.EINTERNAL, err, "internal error"))
		return
	}
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Content-Security-Policy", pageCSP)
	h.Set("Cache-Control", "no-cache")
	_, _ = w.Write(html)
}
