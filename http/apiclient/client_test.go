package apiclient_test

import (
	"bufio"
	"context"
	"encoding/json"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/keyledger/keyledger/http/apiclient"
	"github.com/keyledger/keyledger/internal/apitest"
	"github.com/keyledger/keyledger/internal/natstest"
)

func bearer(token string) apiclient.RequestEditorFn {
	return func(_ context.Context, req *http.Request) error {
		req.Header.Set("Authorization", "Bearer "+token)
		return nil
	}
}

// answered fails the test unless the call went through with status want.
func answered(t *testing.T, err error, res interface {
	StatusCode() int
	GetBody() []byte
}, want int) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
	if res.StatusCode() != want {
		t.Fatalf("status %d, want %d: %s", res.StatusCode(), want, res.GetBody())
	}
}

// TestGeneratedClientManagesAKey takes a key through its life with the
// client generated from the description, against a real instance, and
// reads the typed answers.
func TestGeneratedClientManagesAKey(t *testing.T) {
	api := apitest.Start(t, natstest.Start(t))
	admin := api.Bootstrap(t, "acme", "invoices:read", "events:read")
	c, err := apiclient.NewClientWithResponses(api.URL, apiclient.WithRequestEditorFn(bearer(admin)))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()

	created, err := c.CreateKeyWithResponse(ctx, "acme", &apiclient.CreateKeyParams{},
		apiclient.CreateKeyJSONRequestBody{Name: "billing worker", Scopes: &[]string{"invoices:read"}})
	answered(t, err, created, http.StatusCreated)
	k, secret := created.JSON201.Key, created.JSON201.Secret
	if k.Status != apiclient.KeyStatusActive || k.Name != "billing worker" || !slices.Equal(k.Scopes, []string{"invoices:read"}) {
		t.Errorf("created %+v", k)
	}
	if got, want := k.Masked, "c8k_****"+secret[len(secret)-4:]; got != want {
		t.Errorf("masked %q, want %q", got, want)
	}
	if h := created.Headers201; h.XKeyledgerSeq != k.Version || h.ETag != strconv.Quote(strconv.FormatInt(k.Version, 10)) || h.Location != "/v1/orgs/acme/keys/"+k.Id {
		t.Errorf("headers %+v for version %d", h, k.Version)
	}

	listed, err := c.ListKeysWithResponse(ctx, "acme", &apiclient.ListKeysParams{})
	answered(t, err, listed, http.StatusOK)
	page, err := listed.JSON200.AsKeyPage()
	if err != nil || len(page.Keys) != 2 || page.Keys[0].Id != k.Id || page.NextCursor != "" {
		t.Errorf("listing: %+v (%v), want the new key first of two", page, err)
	}

	got, err := c.GetKeyWithResponse(ctx, "acme", k.Id, &apiclient.GetKeyParams{})
	answered(t, err, got, http.StatusOK)
	if got.JSON200.Masked != k.Masked || got.JSON200.Version != k.Version {
		t.Errorf("got %+v, want %+v", got.JSON200, k)
	}
	etag := got.Headers200.ETag
	unchanged, err := c.GetKeyWithResponse(ctx, "acme", k.Id, &apiclient.GetKeyParams{IfNoneMatch: &etag})
	answered(t, err, unchanged, http.StatusNotModified)

	rotated, err := c.RotateKeyWithResponse(ctx, "acme", k.Id, &apiclient.RotateKeyParams{IfMatch: &etag},
		apiclient.RotateKeyJSONRequestBody{GracePeriodSeconds: new(3600)})
	answered(t, err, rotated, http.StatusOK)
	newSecret := rotated.JSON200.Secret
	if rotated.JSON200.Key.RotatedAt == nil || rotated.JSON200.Key.Version <= k.Version {
		t.Errorf("rotated %+v", rotated.JSON200.Key)
	}
	stale, err := c.RotateKeyWithResponse(ctx, "acme", k.Id, &apiclient.RotateKeyParams{IfMatch: &etag}, apiclient.RotateKeyJSONRequestBody{})
	answered(t, err, stale, http.StatusPreconditionFailed)
	if stale.JSON412.Error.Code != apiclient.ErrorCodePreconditionFailed {
		t.Errorf("stale If-Match: %+v", stale.JSON412.Error)
	}

	old := verify(t, c, secret)
	if !old.Valid || old.Code != apiclient.VerificationCodeVALID || !old.Deprecated || old.ExpiresAt == nil || old.KeyId == nil || *old.KeyId != k.Id {
		t.Errorf("the replaced value during its grace period: %+v", old)
	}
	if current := verify(t, c, newSecret); current.Code != apiclient.VerificationCodeVALID || current.Deprecated {
		t.Errorf("the new value: %+v", current)
	}
	me, err := c.WhoamiWithResponse(ctx, &apiclient.WhoamiParams{}, bearer(newSecret))
	answered(t, err, me, http.StatusOK)
	if me.JSON200.Id != k.Id {
		t.Errorf("whoami: %s, want %s", me.JSON200.Id, k.Id)
	}

	revoked, err := c.RevokeKeyWithResponse(ctx, "acme", k.Id, &apiclient.RevokeKeyParams{}, apiclient.RevokeKeyJSONRequestBody{Reason: new("left the team")})
	answered(t, err, revoked, http.StatusNoContent)
	again, err := c.RevokeKeyWithResponse(ctx, "acme", k.Id, &apiclient.RevokeKeyParams{}, apiclient.RevokeKeyJSONRequestBody{})
	answered(t, err, again, http.StatusConflict)
	if again.JSON409.Error.Code != apiclient.ErrorCodeKeyRevoked {
		t.Errorf("revoke twice: %+v", again.JSON409.Error)
	}
	for _, s := range []string{secret, newSecret} {
		if v := verify(t, c, s); v.Valid || v.Code != apiclient.VerificationCodeREVOKED {
			t.Errorf("a value of a revoked key: %+v", v)
		}
	}

	history, err := c.ListKeyEventsWithResponse(ctx, "acme", k.Id, &apiclient.ListKeyEventsParams{})
	answered(t, err, history, http.StatusOK)
	checkHistory(t, history.JSON200.Events)

	revocations, err := c.ListOrgEventsWithResponse(ctx, "acme", &apiclient.ListOrgEventsParams{Type: &[]apiclient.EventType{apiclient.EventTypeKeyRevoked}})
	answered(t, err, revocations, http.StatusOK)
	if evs := revocations.JSON200.Events; len(evs) != 1 || evs[0].KeyId != k.Id {
		t.Errorf("the org's revocations: %+v", evs)
	}

	asOf, err := c.ListKeysWithResponse(ctx, "acme", &apiclient.ListKeysParams{AsOf: new(time.Now())})
	answered(t, err, asOf, http.StatusOK)
	then, err := asOf.JSON200.AsKeysAsOf()
	if err != nil || len(then.Keys) != 2 {
		t.Fatalf("keys as of now: %+v (%v)", then, err)
	}
	for _, kk := range then.Keys {
		if kk.Id == k.Id && (kk.Valid || kk.Status != apiclient.KeyStatusRevoked || kk.LastChangedBy.Kind != apiclient.ActorKindKey) {
			t.Errorf("the revoked key as of now: %+v", kk)
		}
	}

	firstStreamedEvent(t, c, admin)
}

func verify(t *testing.T, c *apiclient.ClientWithResponses, secret string) apiclient.Verification {
	t.Helper()
	res, err := c.VerifyKeyWithResponse(context.Background(), &apiclient.VerifyKeyParams{}, apiclient.VerifyKeyJSONRequestBody{Key: secret})
	answered(t, err, res, http.StatusOK)
	return *res.JSON200
}

// checkHistory reads a key's created, rotated (with a grace period) and
// revoked events through the typed data of each.
func checkHistory(t *testing.T, evs []apiclient.Event) {
	t.Helper()
	var types []apiclient.EventType
	for _, e := range evs {
		types = append(types, e.Type)
	}
	if want := []apiclient.EventType{apiclient.EventTypeKeyCreated, apiclient.EventTypeKeyRotated, apiclient.EventTypeKeyRevoked}; !slices.Equal(types, want) {
		t.Fatalf("history %v, want %v", types, want)
	}
	created, err := evs[0].Data.AsKeyCreatedData()
	if err != nil || created.Name != "billing worker" || !strings.HasPrefix(created.SecretHash, "sha256:") {
		t.Errorf("created data %+v (%v)", created, err)
	}
	rotated, err := evs[1].Data.AsKeyRotatedData()
	if err != nil || rotated.PreviousSecretExpiresAt == nil {
		t.Errorf("rotated data %+v (%v), want the end of the grace period", rotated, err)
	}
	revoked, err := evs[2].Data.AsKeyRevokedData()
	if err != nil || revoked.Reason != "left the team" {
		t.Errorf("revoked data %+v (%v)", revoked, err)
	}
	if evs[1].PrevHash == "" || evs[2].Seq <= evs[1].Seq || evs[2].Actor.Kind != apiclient.ActorKindKey {
		t.Errorf("envelopes %+v", evs)
	}
}

// firstStreamedEvent reads the first event of the org's stream from the
// start, through the client's plain form: a stream does not end.
func firstStreamedEvent(t *testing.T, c *apiclient.ClientWithResponses, admin string) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	res, err := c.StreamOrgEvents(ctx, "acme", &apiclient.StreamOrgEventsParams{AfterSeq: new(int64(0))})
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		t.Fatalf("stream: %d", res.StatusCode)
	}
	sc := bufio.NewScanner(res.Body)
	for sc.Scan() {
		data, ok := strings.CutPrefix(sc.Text(), "data: ")
		if !ok {
			continue
		}
		var e apiclient.Event
		if err := json.Unmarshal([]byte(data), &e); err != nil {
			t.Fatal(err)
		}
		if e.Seq != 1 || e.Type != apiclient.EventTypeKeyCreated || e.Actor.Kind != apiclient.ActorKindSystem {
			t.Errorf("first event of the stream: %+v, want the bootstrap's KeyCreated", e)
		}
		return
	}
	t.Fatalf("the stream ended before its first event: %v", sc.Err())
}
