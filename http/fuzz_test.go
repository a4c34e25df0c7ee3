package http_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/keyledger/keyledger/internal/apitest"
	"github.com/keyledger/keyledger/internal/natstest"
)

// FuzzCreateRequest sends arbitrary bodies to the create endpoint through
// the real stack: every answer is 201 or a JSON 4xx, never a 5xx, and a
// refused body appends nothing.
//
//	go test -run '^$' -fuzz FuzzCreateRequest -fuzztime 30s ./http/
func FuzzCreateRequest(f *testing.F) {
	for _, seed := range []string{`{"name":"ok"}`, `{"name":"a","scopes":["read"]}`, `{"name":""}`, `{"name":1}`, `{`, `[]`, `{"name":"a","x":1}`,
		`{"name":"a","expires_at":"2020-01-01T00:00:00Z"}`, `{"name":"a","scopes":["Read"]}`, `{"name":"\u0000"}`, strings.Repeat("[", 1000)} {
		f.Add(seed)
	}
	env := natstest.Start(f)
	api := apitest.Start(f, env)
	admin := api.Bootstrap(f, "acme", "read")
	f.Fuzz(func(t *testing.T, body string) {
		before, _ := env.Store.LastSeq(context.Background())
		req, _ := http.NewRequest("POST", api.URL+"/v1/orgs/acme/keys", strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+admin)
		req.Header.Set("Content-Type", "application/json")
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		raw, _ := io.ReadAll(res.Body)
		res.Body.Close()
		var e struct{ Error struct{ Code string } }
		_ = json.Unmarshal(raw, &e)
		switch {
		case res.StatusCode == http.StatusCreated:
		case res.StatusCode >= 400 && res.StatusCode < 500 && e.Error.Code != "":
			if after, _ := env.Store.LastSeq(context.Background()); after != before {
				t.Fatalf("a refused body (%d) appended an event", res.StatusCode)
			}
		default:
			t.Fatalf("body %q: %d %s", body, res.StatusCode, raw)
		}
	})
}
