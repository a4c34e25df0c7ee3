package http

import (
	_ "embed"
	"net/http"
)

// openAPI describes every route of Handler (OpenAPI 3.1). The tests drive
// every route through a client that checks each request and answer
// against it, and compare its paths with the router's.
//
//go:embed openapi.json
var openAPI []byte

func (s *Server) openAPIDocument(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(openAPI)
}
