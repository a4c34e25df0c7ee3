package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/keyledger/keyledger/events"
	"github.com/keyledger/keyledger/internal/natstest"
	"github.com/keyledger/keyledger/verifier"
)

// TestVerifierReportsItsOutcomes: a Go verifier given a service name, on
// the read-only credential of the binary's embedded server, counts its
// verifications by outcome and caller and reports them; keyledger shows
// them in the key's usage, its callers named after the service, beside
// its own. A report made by hand with the same credential counts only
// keys that exist, only in the last day, and under the name it came with.
func TestVerifierReportsItsOutcomes(t *testing.T) {
	if testing.Short() {
		t.Skip("starts the binary: not in -short")
	}
	dir := t.TempDir()
	addr, natsAddr := freeAddr(t), freeAddr(t)
	data := filepath.Join(dir, "data")
	env := []string{"KEYLEDGER_DATA_DIR=" + data, "KEYLEDGER_HTTP_ADDR=" + addr, "KEYLEDGER_NATS_LISTEN=" + natsAddr}
	p := serveProcess(t, dir, addr, env, "--usage-outcomes-flush-interval", "1s")
	admin, stderr, err := runBinary(t, dir, []string{"KEYLEDGER_SIGNING_KEY=" + filepath.Join(data, "audit-signing-key.pem")},
		"bootstrap", "--nats-url", "nats://"+natsAddr, "--nats-creds", filepath.Join(data, "nats-service.nk"), "--org", "acme", "--name", "admin")
	if err != nil {
		t.Fatalf("bootstrap: %v %s", err, stderr)
	}
	admin = strings.TrimSpace(admin)
	var kept, gone struct {
		Key    struct{ ID string }
		Secret string
	}
	callJSON(t, p.url, "POST", "/v1/orgs/acme/keys", admin, `{"name":"kept"}`, http.StatusCreated, &kept)
	callJSON(t, p.url, "POST", "/v1/orgs/acme/keys", admin, `{"name":"gone"}`, http.StatusCreated, &gone)
	var none struct{}
	req, _ := http.NewRequest("DELETE", p.url+"/v1/orgs/acme/keys/"+gone.Key.ID, nil)
	req.Header.Set("Authorization", "Bearer "+admin)
	if res, err := http.DefaultClient.Do(req); err != nil || res.StatusCode != http.StatusNoContent {
		t.Fatalf("revoke: %v %v", res, err)
	}
	_ = none

	creds, err := verifier.Credentials(filepath.Join(data, "nats-subscriber.nk"))
	if err != nil {
		t.Fatal(err)
	}
	nc, err := nats.Connect("nats://"+natsAddr, creds, nats.CustomInboxPrefix(verifier.SubscriberInbox))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	_, pemSet := call(t, "GET", p.url+"/v1/audit/signers", "", "")
	signers, err := verifier.ParseSigners([]byte(pemSet))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	v, err := verifier.New(ctx, js, verifier.Options{Signers: signers, Service: "billing", ReportEvery: 200 * time.Millisecond, Logger: natstest.Quiet()})
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	if err := v.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	caller := verifier.Caller{Address: netip.MustParseAddr("203.0.113.7"), UserAgent: "billing-client/1.0"}
	for range 3 {
		if r := v.VerifyFrom(kept.Secret, caller); !r.Valid() {
			t.Fatalf("the verifier says %s", r.Code)
		}
	}
	for !v.VerifyFrom(gone.Secret, caller).Valid() && v.Verify(gone.Secret).Code != "REVOKED" {
		time.Sleep(10 * time.Millisecond)
	}
	v.VerifyFrom(gone.Secret, caller)
	// keyledger's own verification of the same key, over HTTP.
	var verdict struct{ Code string }
	callJSON(t, p.url, "POST", "/v1/verify", "", `{"key":"`+kept.Secret+`"}`, http.StatusOK, &verdict)

	type usageView struct {
		Totals  struct{ Valid, Revoked uint64 }
		Callers []struct {
			Address   string
			UserAgent string `json:"user_agent"`
			Service   string
			Count     uint64
		} `json:"callers"`
	}
	wait := func(id string, ok func(usageView) bool) usageView {
		t.Helper()
		var u usageView
		for deadline := time.Now().Add(15 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
			callJSON(t, p.url, "GET", "/v1/orgs/acme/keys/"+id+"/usage?window=24h&step=1h", admin, "", http.StatusOK, &u)
			if ok(u) {
				return u
			}
		}
		t.Fatalf("usage of %s: %+v", id, u)
		return u
	}
	u := wait(kept.Key.ID, func(u usageView) bool { return u.Totals.Valid >= 4 })
	if u.Totals.Valid != 4 {
		t.Errorf("kept: %d valid, want 3 in the verifier and 1 over HTTP", u.Totals.Valid)
	}
	var billing bool
	for _, c := range u.Callers {
		if c.Service == "billing" && c.Address == "203.0.113.7" && c.UserAgent == "billing-client/1.0" && c.Count == 3 {
			billing = true
		}
	}
	if !billing {
		t.Errorf("kept's callers do not show the verifier's: %+v", u.Callers)
	}
	wait(gone.Key.ID, func(u usageView) bool { return u.Totals.Revoked >= 1 })

	// A report by hand, with the read-only credential.
	now := time.Now().Unix() / 60
	line := func(id string, at int64) string {
		return fmt.Sprintf(`{"o":"acme","k":%q,"m":[[%d,5,0,0,0,0]],"c":[{"a":"198.51.100.9","u":"forged","s":"payments","f":%d,"l":%d,"n":5,"r":0}]}`, id, at, at*60, at*60)
	}
	report := "keyledger-outcomes-v1\n" + line("key_01ARZ3NDEKTSV4RRFFQ69G5FAV", now) + "\n" + line(kept.Key.ID, now+600) + "\n" + line(kept.Key.ID, now) + "\n"
	m := nats.NewMsg(events.UsageReportSubject)
	m.Header.Set(events.UsageReportServiceHeader, "hand")
	m.Data = []byte(report)
	res, err := nc.RequestMsg(m, 5*time.Second)
	if err != nil {
		t.Fatalf("a report by hand: %v", err)
	}
	var answer struct{ Keys int }
	_ = json.Unmarshal(res.Data, &answer)
	if answer.Keys != 1 {
		t.Errorf("a report of an unknown key, a minute ten hours ahead and one now counted %d keys, want 1: %s", answer.Keys, res.Data)
	}
	u = wait(kept.Key.ID, func(u usageView) bool { return u.Totals.Valid >= 9 })
	if u.Totals.Valid != 9 {
		t.Errorf("kept after the report: %d valid, want 9 (the minute ahead dropped)", u.Totals.Valid)
	}
	for _, c := range u.Callers {
		if c.UserAgent == "forged" && c.Service != "hand" {
			t.Errorf("a reported caller is named %q, not after the report's service", c.Service)
		}
	}
	m.Header.Del(events.UsageReportServiceHeader)
	if res, err := nc.RequestMsg(m, 5*time.Second); err != nil || !strings.Contains(string(res.Data), "service name") {
		t.Errorf("a report without a service name: %v %s", err, res.Data)
	}
}
