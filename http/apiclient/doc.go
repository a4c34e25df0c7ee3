// Package apiclient is a Go client of keyledger's HTTP API, generated with
// oapi-codegen from the API's description, http/openapi.json. Do not edit
// apiclient.gen.go: change the description and run go generate here;
// TestGeneratedClientIsCurrent fails while the two differ.
//
// NewClientWithResponses gives typed answers: JSON201, JSON409 and so on,
// with each status's headers. An event stream does not end, so read it
// from the *http.Response of Client.StreamOrgEvents or Client.StreamEvents,
// not with their WithResponse forms, which read the body to its end.
package apiclient

//go:generate go tool oapi-codegen -config oapi-codegen.yaml ../openapi.json
