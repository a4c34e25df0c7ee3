package http_test

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/keyledger/keyledger/domain"
	khttp "github.com/keyledger/keyledger/http"
)

// leaksTour drives the leak routes through the conformance check: a signed
// report from GitHub, unsigned and malformed ones, one too large, and the
// generic route with every kind of caller; then the failed-authentication
// limit on both.
func leaksTour(t *testing.T, c *conformance) {
	g := newGitHub(t)
	h := startWith(t, t.TempDir(), func(s *khttp.Server) { s.GitHubKeys = &khttp.GitHubKeys{URL: g.keys.URL} })
	cl := c.client(t, h)
	admin := h.bootstrap("acme")
	target := h.create("acme", admin, map[string]any{"name": "target"})
	plain := h.create("acme", admin, map[string]any{"name": "plain"}).Secret

	// GitHub's route (g.report goes through h.request: here through cl).
	signed := func(body string) []string {
		return append([]string{"Content-Type", "application/json"}, g.sign(body)...)
	}
	body := `[{"token":"` + target.Secret + `","type":"keyledger_api_key","url":"https://github.com/o/r","source":"content"}]`
	cl.do(http.StatusOK, "POST", "/v1/secret-scanning/github", "", body, signed(body)...)
	cl.do(http.StatusUnauthorized, "POST", "/v1/secret-scanning/github", "", body, "Content-Type", "application/json")
	notAList := `{"token": "x"}`
	cl.broken(http.StatusBadRequest, "POST", "/v1/secret-scanning/github", "", notAList, signed(notAList)...)
	large := "[" + strings.Repeat(" ", khttp.MaxLeakBatchBytes) + "]"
	cl.do(http.StatusRequestEntityTooLarge, "POST", "/v1/secret-scanning/github", "", large, "Content-Type", "application/json")

	// The generic route.
	other := h.create("acme", admin, map[string]any{"name": "other"})
	cl.do(http.StatusOK, "POST", "/v1/leaks", admin, map[string]string{"token": other.Secret, "url": "https://paste.example/1"})
	cl.broken(http.StatusUnauthorized, "POST", "/v1/leaks", "", map[string]string{"token": other.Secret})
	cl.do(http.StatusForbidden, "POST", "/v1/leaks", plain, map[string]string{"token": other.Secret})
	cl.broken(http.StatusBadRequest, "POST", "/v1/leaks", admin, map[string]any{"token": other.Secret, "unknown": 1})
	cl.broken(http.StatusUnsupportedMediaType, "POST", "/v1/leaks", admin, "token=x", "Content-Type", "text/plain")

	// The failed-authentication limit, on both.
	limited := startWith(t, t.TempDir(), func(s *khttp.Server) {
		s.GitHubKeys = &khttp.GitHubKeys{URL: g.keys.URL}
		s.AuthFailureLimit = khttp.Limit{Per: 1, Every: time.Hour, Burst: 1}
	})
	lc := c.client(t, limited)
	unknown := "c8k_" + strings.Repeat("a", domain.KeyBodyLen)
	lc.do(http.StatusUnauthorized, "POST", "/v1/leaks", unknown, map[string]string{"token": "x"})
	lc.do(http.StatusTooManyRequests, "POST", "/v1/leaks", unknown, map[string]string{"token": "x"})
	lc.do(http.StatusTooManyRequests, "POST", "/v1/secret-scanning/github", "", body, signed(body)...)
}
