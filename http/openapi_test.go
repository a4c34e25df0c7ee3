package http_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"maps"
	"net/http"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/legacy"
	"github.com/go-chi/chi/v5"

	khttp "github.com/keyledger/keyledger/http"
	"github.com/keyledger/keyledger/webhooks"
)

// The description's bodies that are not JSON are read as text.
func init() {
	for _, mt := range []string{"text/html", "text/css", "text/javascript", "application/x-pem-file"} {
		openapi3filter.RegisterBodyDecoder(mt, openapi3filter.PlainBodyDecoder)
	}
}

// loadDescription reads openapi.json and fails unless it is a valid
// OpenAPI 3.1 document.
func loadDescription(t *testing.T) *openapi3.T {
	t.Helper()
	raw, err := os.ReadFile("openapi.json")
	if err != nil {
		t.Fatal(err)
	}
	loader := openapi3.NewLoader()
	doc, err := loader.LoadFromData(raw)
	if err != nil {
		t.Fatalf("load openapi.json: %v", err)
	}
	if err := doc.Validate(loader.Context, openapi3.EnableExamplesValidation()); err != nil {
		t.Fatalf("openapi.json is not a valid OpenAPI document: %v", err)
	}
	if !doc.IsOpenAPI31OrLater() {
		t.Fatalf("openapi.json is OpenAPI %s, want 3.1", doc.OpenAPI)
	}
	return doc
}

func TestOpenAPIDescriptionIsValidAndServed(t *testing.T) {
	doc := loadDescription(t)
	ids := map[string]bool{}
	for path, item := range doc.Paths.Map() {
		for method, op := range item.Operations() {
			if op.OperationID == "" || ids[op.OperationID] {
				t.Errorf("%s %s: operationId %q is missing or not unique", method, path, op.OperationID)
			}
			ids[op.OperationID] = true
		}
	}

	h := start(t)
	res := h.must(http.StatusOK, "GET", "/openapi.json", "", nil)
	if got := res.Header.Get("Content-Type"); got != "application/json" {
		t.Errorf("Content-Type %q, want application/json", got)
	}
	file, err := os.ReadFile("openapi.json")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(res.body, file) {
		t.Error("GET /openapi.json is not openapi.json")
	}
}

// TestOpenAPIDescribesEveryRoute compares the description's operations
// with the routes the router serves, both ways.
func TestOpenAPIDescribesEveryRoute(t *testing.T) {
	doc := loadDescription(t)
	described := map[string]bool{}
	for path, item := range doc.Paths.Map() {
		for method := range item.Operations() {
			described[method+" "+path] = true
		}
	}
	served := map[string]bool{}
	routes := (&khttp.Server{SSO: &khttp.SSO{}, GitHubKeys: &khttp.GitHubKeys{}, Webhooks: &webhooks.Deliverer{}}).Handler().(chi.Routes) // with the optional routes
	err := chi.Walk(routes, func(method, route string, _ http.Handler, _ ...func(http.Handler) http.Handler) error {
		// A subrouter's root is walked as "/prefix/"; it serves "/prefix".
		if len(route) > 1 {
			route = strings.TrimSuffix(route, "/")
		}
		served[method+" "+route] = true
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range slices.Sorted(maps.Keys(served)) {
		if !described[r] {
			t.Errorf("the router serves %s, which the description lacks", r)
		}
	}
	for _, r := range slices.Sorted(maps.Keys(described)) {
		if !served[r] {
			t.Errorf("the description has %s, which the router does not serve", r)
		}
	}
}

// conformance checks requests and answers against the description and
// records which answer of which operation has been seen.
type conformance struct {
	doc    *openapi3.T
	router routers.Router

	mu   sync.Mutex
	seen map[string]bool // "<operationId> <status>"
}

func newConformance(t *testing.T, doc *openapi3.T) *conformance {
	t.Helper()
	// The description's servers are where users find keyledger; the
	// tests' instances listen on ports of their own. Match on paths.
	doc.Servers = nil
	router, err := legacy.NewRouter(doc)
	if err != nil {
		t.Fatal(err)
	}
	return &conformance{doc: doc, router: router, seen: map[string]bool{}}
}

// unseen lists each described answer that no request has had.
func (c *conformance) unseen() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []string
	for _, item := range c.doc.Paths.Map() {
		for _, op := range item.Operations() {
			for status := range op.Responses.Map() {
				if status != "default" && !c.seen[op.OperationID+" "+status] {
					out = append(out, op.OperationID+" "+status)
				}
			}
		}
	}
	sort.Strings(out)
	return out
}

type brokenKey struct{}

// checked is the RoundTripper of a conformance client.
type checked struct {
	t    *testing.T
	c    *conformance
	next http.RoundTripper
}

// bearerPresent is the description's bearer scheme as a request can show
// it: whether the credential is valid is for the service to say.
func bearerPresent(_ context.Context, in *openapi3filter.AuthenticationInput) error {
	scheme, cred, ok := strings.Cut(in.RequestValidationInput.Request.Header.Get("Authorization"), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") || strings.TrimSpace(cred) == "" {
		return errors.New("no bearer credential")
	}
	return nil
}

func (ck *checked) RoundTrip(req *http.Request) (*http.Response, error) {
	var body []byte
	if req.Body != nil {
		var err error
		if body, err = io.ReadAll(req.Body); err != nil {
			return nil, err
		}
		req.Body.Close()
	}
	withBody := func() *http.Request {
		r := req.Clone(req.Context())
		if req.Body != nil {
			r.Body = io.NopCloser(bytes.NewReader(body))
		}
		return r
	}
	name := req.Method + " " + req.URL.RequestURI()
	route, params, err := ck.c.router.FindRoute(req)
	if err != nil {
		ck.t.Errorf("%s: no operation of the description: %v", name, err)
		return ck.next.RoundTrip(withBody())
	}
	in := &openapi3filter.RequestValidationInput{
		Request: withBody(), PathParams: params, Route: route,
		Options: &openapi3filter.Options{AuthenticationFunc: bearerPresent},
	}
	name += " (" + route.Operation.OperationID + ")"
	err = openapi3filter.ValidateRequest(req.Context(), in)
	switch broken := req.Context().Value(brokenKey{}) != nil; {
	case broken && err == nil:
		ck.t.Errorf("%s: the description accepts this request, which the test breaks on purpose", name)
	case !broken && err != nil:
		ck.t.Errorf("%s: the request does not conform to the description: %v", name, err)
	}
	res, err := ck.next.RoundTrip(withBody())
	if err != nil {
		return nil, err
	}
	return res, ck.checkAnswer(name, in, res)
}

// checkAnswer records the answer's status and checks it against the
// description: status, headers, and the body unless it is an event stream,
// which does not end (its events are checked by the reader).
func (ck *checked) checkAnswer(name string, in *openapi3filter.RequestValidationInput, res *http.Response) error {
	op := in.Route.Operation
	ck.c.mu.Lock()
	ck.c.seen[op.OperationID+" "+strconv.Itoa(res.StatusCode)] = true
	ck.c.mu.Unlock()
	described := op.Responses.Status(res.StatusCode)
	if described == nil && res.StatusCode != http.StatusInternalServerError {
		ck.t.Errorf("%s: status %d is not described", name, res.StatusCode)
	}
	out := &openapi3filter.ResponseValidationInput{
		RequestValidationInput: in, Status: res.StatusCode, Header: res.Header,
		Options: &openapi3filter.Options{IncludeResponseStatus: true},
	}
	var raw []byte
	if res.Header.Get("Content-Type") == "text/event-stream" {
		out.Options.ExcludeResponseBody = true
	} else {
		var err error
		raw, err = io.ReadAll(res.Body)
		res.Body.Close()
		if err != nil {
			return err
		}
		res.Body = io.NopCloser(bytes.NewReader(raw))
		out.SetBodyBytes(raw)
	}
	if err := openapi3filter.ValidateResponse(in.Request.Context(), out); err != nil {
		ck.t.Errorf("%s: the answer %d does not conform to the description: %v", name, res.StatusCode, err)
	}
	if described != nil && raw != nil {
		ck.checkErrorCode(name, res.StatusCode, described.Value, raw)
	}
	return nil
}

// errorCodes are the codes each status may carry, as docs/CONTRACT.md
// lists them.
var errorCodes = map[int][]string{
	400: {"invalid"}, 401: {"unauthenticated"}, 403: {"forbidden"}, 404: {"not_found"},
	409: {"conflict", "key_revoked"}, 412: {"precondition_failed"}, 413: {"too_large"},
	415: {"unsupported_media_type"}, 429: {"rate_limited"}, 500: {"internal"}, 503: {"unavailable"},
}

// checkErrorCode holds an error answer to the one map from code to status.
func (ck *checked) checkErrorCode(name string, status int, described *openapi3.Response, raw []byte) {
	mt := described.Content.Get("application/json")
	if mt == nil || mt.Schema == nil || mt.Schema.Ref != "#/components/schemas/Error" {
		return
	}
	var e struct{ Error struct{ Code string } }
	_ = json.Unmarshal(raw, &e)
	if !slices.Contains(errorCodes[status], e.Error.Code) {
		ck.t.Errorf("%s: status %d with code %q, want one of %v", name, status, e.Error.Code, errorCodes[status])
	}
}

// client sends requests to one instance through the conformance check.
type client struct {
	t    *testing.T
	c    *conformance
	base string
	http *http.Client
}

func (c *conformance) client(t *testing.T, h *harness) *client {
	return &client{t: t, c: c, base: h.srv.URL, http: &http.Client{Transport: &checked{t: t, c: c, next: h.srv.Client().Transport}}}
}

// do sends a request that conforms to the description and fails the test
// unless the answer has status want. A body that is a string goes as is,
// anything else as JSON; headers come in pairs, and an empty value removes
// the header.
func (cl *client) do(want int, method, path, token string, body any, headers ...string) response {
	cl.t.Helper()
	return cl.send(context.Background(), want, method, path, token, body, headers...)
}

// broken sends a request that breaks the description on purpose, which the
// description must refuse as the service does.
func (cl *client) broken(want int, method, path, token string, body any, headers ...string) response {
	cl.t.Helper()
	return cl.send(context.WithValue(context.Background(), brokenKey{}, true), want, method, path, token, body, headers...)
}

func (cl *client) send(ctx context.Context, want int, method, path, token string, body any, headers ...string) response {
	cl.t.Helper()
	req := cl.request(ctx, method, path, token, body, headers...)
	res, err := cl.http.Do(req)
	if err != nil {
		cl.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer res.Body.Close()
	if res.Header.Get("Content-Type") == "text/event-stream" {
		cl.t.Fatalf("%s %s: an event stream, want a finite answer %d", method, path, want)
	}
	raw, err := io.ReadAll(res.Body)
	if err != nil {
		cl.t.Fatal(err)
	}
	if res.StatusCode != want {
		cl.t.Fatalf("%s %s: status %d, want %d: %s", method, path, res.StatusCode, want, raw)
	}
	return response{res, raw}
}

func (cl *client) request(ctx context.Context, method, path, token string, body any, headers ...string) *http.Request {
	cl.t.Helper()
	return newRequest(cl.t, ctx, method, cl.base+path, token, body, headers...)
}

// stream opens an event stream through the check, reads its opening
// comment and then n events, checks each event's data against the
// description's Event, and closes the stream.
func (cl *client) stream(n int, path, token string, headers ...string) []eventView {
	cl.t.Helper()
	// A bound on a stream that stops sending, so that the test fails
	// instead of hanging; never reached when the events are there.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res, err := cl.http.Do(cl.request(ctx, "GET", path, token, nil, headers...))
	if err != nil {
		cl.t.Fatalf("GET %s: %v", path, err)
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK || res.Header.Get("Content-Type") != "text/event-stream" {
		cl.t.Fatalf("GET %s: %d %s, want an event stream", path, res.StatusCode, res.Header.Get("Content-Type"))
	}
	schema := cl.c.doc.Components.Schemas["Event"].Value
	rd := bufio.NewReader(res.Body)
	if line, err := rd.ReadString('\n'); err != nil || !strings.HasPrefix(line, ": keyledger events of ") {
		cl.t.Fatalf("GET %s: first line %q (%v), want the opening comment", path, line, err)
	}
	var out []eventView
	var id, typ string
	for len(out) < n {
		line, err := rd.ReadString('\n')
		if err != nil {
			cl.t.Fatalf("GET %s: %d events of %d: %v", path, len(out), n, err)
		}
		line = strings.TrimSuffix(line, "\n")
		switch {
		case strings.HasPrefix(line, "id: "):
			id = line[4:]
		case strings.HasPrefix(line, "event: "):
			typ = line[7:]
		case strings.HasPrefix(line, "data: "):
			var v any
			if err := json.Unmarshal([]byte(line[6:]), &v); err != nil {
				cl.t.Fatalf("GET %s: event data %q: %v", path, line, err)
			}
			if err := schema.VisitJSON(v, openapi3.EnableJSONSchema2020()); err != nil {
				cl.t.Errorf("GET %s: event data does not conform to Event: %v", path, err)
			}
			var e eventView
			_ = json.Unmarshal([]byte(line[6:]), &e)
			if strconv.FormatUint(e.Seq, 10) != id || e.Type != typ {
				cl.t.Errorf("GET %s: event id %s and type %s, data says seq %d and type %s", path, id, typ, e.Seq, e.Type)
			}
			out = append(out, e)
		}
	}
	return out
}

func decodeAs[T any](t *testing.T, r response) T {
	t.Helper()
	var v T
	r.json(t, &v)
	return v
}

// padded is a JSON object over the 64 KiB a body may hold, yet one that
// the description, which says nothing of size, accepts.
func padded(object string) string {
	return strings.Replace(object, "{", "{"+strings.Repeat(" ", khttp.MaxBodyBytes), 1)
}

// TestOpenAPIDescribesEveryAnswer drives every route of real instances
// through the conformance check, until every answer the description gives
// each operation has been seen.
func TestOpenAPIDescribesEveryAnswer(t *testing.T) {
	c := newConformance(t, loadDescription(t))
	t.Run("Service", func(t *testing.T) { newTour(t, c).run() })
	t.Run("Limits", func(t *testing.T) { limitsTour(t, c) })
	t.Run("Overload", func(t *testing.T) { overloadTour(t, c) })
	t.Run("PerClient", func(t *testing.T) { perClientTour(t, c) })
	t.Run("SignIn", func(t *testing.T) { ssoTour(t, c) })
	t.Run("Leaks", func(t *testing.T) { leaksTour(t, c) })
	t.Run("Webhooks", func(t *testing.T) { webhooksTour(t, c) })
	t.Run("Usage", func(t *testing.T) { usageTour(t, c) })
	if t.Failed() {
		return
	}
	if missing := c.unseen(); len(missing) > 0 {
		t.Errorf("described answers no request had: %s", strings.Join(missing, ", "))
	}
}

// contains reports whether a page of keys holds the key id.
func contains(keys []keyView, id string) bool {
	return slices.ContainsFunc(keys, func(k keyView) bool { return k.ID == id })
}

func etagOf(r response) string { return r.Header.Get("ETag") }

func mustHeader(t *testing.T, r response, name, want string) {
	t.Helper()
	if got := r.Header.Get(name); got != want {
		t.Errorf("%s: %q, want %q", name, got, want)
	}
}
