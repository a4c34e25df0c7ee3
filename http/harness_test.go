package http_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/keyledger/keyledger/domain"
	khttp "github.com/keyledger/keyledger/http"
	"github.com/keyledger/keyledger/internal/apitest"
	"github.com/keyledger/keyledger/internal/natstest"
	"github.com/keyledger/keyledger/projections"
)

// harness is keyledger as `serve` wires it: a real embedded nats-server,
// the projections following the stream, and the API on a real HTTP server.
type harness struct {
	t      *testing.T
	env    *natstest.Env
	srv    *httptest.Server
	keys   *domain.Keys
	api    *khttp.Server
	runner *projections.Runner
	logs   *syncBuffer
	stop   func()
}

// syncBuffer collects log lines from concurrent requests.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func start(t *testing.T) *harness { return startIn(t, t.TempDir()) }

func startIn(t *testing.T, dir string) *harness { return startWith(t, dir, nil) }

// startWith lets a test configure the API before it starts serving.
func startWith(t *testing.T, dir string, configure func(*khttp.Server)) *harness {
	t.Helper()
	return startOpts(t, dir, apitest.Options{Configure: configure})
}

// startOpts starts an instance with apitest's options (its Logger is the
// harness's own).
func startOpts(t *testing.T, dir string, o apitest.Options) *harness {
	t.Helper()
	env := natstest.StartIn(t, dir)
	h := instanceOpts(t, env, o)
	stop := h.stop
	h.stop = func() { stop(); env.Stop() }
	return h
}

// instance runs one more keyledger instance on env's NATS, as a second
// process on the same cluster would.
func instance(t *testing.T, env *natstest.Env, configure func(*khttp.Server)) *harness {
	t.Helper()
	return instanceOpts(t, env, apitest.Options{Configure: configure})
}

func instanceOpts(t *testing.T, env *natstest.Env, o apitest.Options) *harness {
	t.Helper()
	h := &harness{t: t, env: env, logs: &syncBuffer{}}
	o.Logger = slog.New(slog.NewJSONHandler(h.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	a := apitest.Start(t, env, o)
	h.keys, h.api, h.runner, h.srv, h.stop = a.Keys, a.Server, a.Runner, a.HTTP, a.Stop
	return h
}

// bootstrap mints a management key for org the way `keyledger bootstrap`
// does, and waits until this instance knows it.
func (h *harness) bootstrap(org string, scopes ...string) string {
	h.t.Helper()
	if len(scopes) == 0 {
		// A key grants only scopes it holds: the admin holds those the tests give.
		scopes = []string{domain.ScopeManage, "read", "write", "invoices:read", "events:read"}
	}
	issued, err := h.keys.Create(context.Background(), domain.CreateKey{
		OrgID: org, Name: "admin of " + org, Scopes: scopes,
		By: domain.SystemPrincipal("bootstrap", "keyledger bootstrap"),
	})
	if err != nil {
		h.t.Fatalf("bootstrap %s: %v", org, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := h.runner.WaitFor(ctx, issued.Key.Version); err != nil {
		h.t.Fatalf("bootstrap %s: %v", org, err)
	}
	return issued.Secret
}

// response is an answer with its body read.
type response struct {
	*http.Response
	body []byte
}

func (r response) json(t *testing.T, v any) {
	t.Helper()
	if err := json.Unmarshal(r.body, v); err != nil {
		t.Fatalf("decode %s: %v", r.body, err)
	}
}

// errorCode returns the code of an error answer.
func (r response) errorCode() string {
	var e struct {
		Error struct{ Code, Message string }
	}
	_ = json.Unmarshal(r.body, &e)
	return e.Error.Code
}

// request sends a request; a body that is a string or []byte goes as is,
// anything else as JSON. Headers come in pairs.
func (h *harness) request(method, path, token string, body any, headers ...string) response {
	h.t.Helper()
	req := newRequest(h.t, context.Background(), method, h.srv.URL+path, token, body, headers...)
	res, err := h.srv.Client().Do(req)
	if err != nil {
		h.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer res.Body.Close()
	raw, err := io.ReadAll(res.Body)
	if err != nil {
		h.t.Fatal(err)
	}
	return response{res, raw}
}

// newRequest builds a request; a body that is a string or []byte goes as
// is, an io.Reader without its length (chunked), anything else as JSON.
// Headers come in pairs; an empty value removes the header.
func newRequest(t *testing.T, ctx context.Context, method, url, token string, body any, headers ...string) *http.Request {
	t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	case []byte:
		rd = bytes.NewReader(b)
	case io.Reader:
		rd = io.MultiReader(b) // hides the length: the body goes chunked
	default:
		raw, err := json.Marshal(b)
		if err != nil {
			t.Fatal(err)
		}
		rd = bytes.NewReader(raw)
	}
	req, err := http.NewRequestWithContext(ctx, method, url, rd)
	if err != nil {
		t.Fatal(err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	for i := 0; i+1 < len(headers); i += 2 {
		if headers[i+1] == "" {
			req.Header.Del(headers[i])
			continue
		}
		req.Header.Set(headers[i], headers[i+1])
	}
	return req
}

// must sends a request and fails the test unless the status is want.
func (h *harness) must(want int, method, path, token string, body any, headers ...string) response {
	h.t.Helper()
	res := h.request(method, path, token, body, headers...)
	if res.StatusCode != want {
		h.t.Fatalf("%s %s: status %d, want %d: %s", method, path, res.StatusCode, want, res.body)
	}
	return res
}

type keyView struct {
	ID, OrgID, Name, Masked, Status string
	Scopes                          []string
	CreatedAt                       string                          `json:"created_at"`
	CreatedBy                       struct{ Kind, ID, Name string } `json:"created_by"`
	RotatedAt                       *string                         `json:"rotated_at"`
	RevokedAt                       *string                         `json:"revoked_at"`
	Version                         uint64
}

type issued struct {
	Key    keyView
	Secret string
}

type verifyView struct {
	Valid      bool
	Code       string
	OrgID      *string `json:"org_id"`
	KeyID      *string `json:"key_id"`
	Deprecated bool
	ExpiresAt  *string `json:"expires_at"`
}

type eventView struct {
	EventID    string `json:"event_id"`
	Type       string
	OrgID      string `json:"org_id"`
	KeyID      string `json:"key_id"`
	OccurredAt string `json:"occurred_at"`
	Actor      struct{ Kind, ID, Name string }
	Data       json.RawMessage
	Seq        uint64
}

func (h *harness) create(org, token string, body any) issued {
	h.t.Helper()
	var out issued
	h.must(http.StatusCreated, "POST", "/v1/orgs/"+org+"/keys", token, body).json(h.t, &out)
	return out
}

func (h *harness) rotate(org, id, token string, body any) issued {
	h.t.Helper()
	var out issued
	h.must(http.StatusOK, "POST", "/v1/orgs/"+org+"/keys/"+id+"/rotate", token, body).json(h.t, &out)
	return out
}

func (h *harness) verify(secret string) verifyView {
	h.t.Helper()
	var out verifyView
	h.must(http.StatusOK, "POST", "/v1/verify", "", map[string]string{"key": secret}).json(h.t, &out)
	return out
}

func (h *harness) list(org, token, query string) []keyView {
	h.t.Helper()
	var out struct{ Keys []keyView }
	h.must(http.StatusOK, "GET", "/v1/orgs/"+org+"/keys"+query, token, nil).json(h.t, &out)
	return out.Keys
}

func (h *harness) history(org, id, token string) []eventView {
	h.t.Helper()
	var out struct{ Events []eventView }
	h.must(http.StatusOK, "GET", "/v1/orgs/"+org+"/keys/"+id+"/events", token, nil).json(h.t, &out)
	return out.Events
}

// asSystem is keyledger itself acting, for tests that are not about who
// may act.
var asSystem = domain.SystemPrincipal("test", "test")
