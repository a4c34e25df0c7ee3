package http

import (
	"context"
	"crypto/ecdsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"sync"
	"time"

	"github.com/keyledger/keyledger/domain"
)

// GitHub's secret scanning partner program, as GitHub documents it: a POST
// of a JSON array of {token, type, url, source}, signed with ECDSA P-256
// over SHA-256 of the raw body (the signature in
// Github-Public-Key-Signature, base64 of ASN.1), by the key that
// Github-Public-Key-Identifier names among those GitHub publishes.
const (
	githubScanningPath = "/v1/secret-scanning/github"
	// DefaultGitHubKeysURL is where GitHub publishes the keys it signs
	// secret scanning reports with.
	DefaultGitHubKeysURL = "https://api.github.com/meta/public_keys/secret_scanning"
	// MaxLeakBatchBytes bounds a report's body: 10,000 tokens with their
	// URLs fit well within it.
	MaxLeakBatchBytes = 8 << 20
	// MaxLargeBodies is how many such bodies are read or served at once;
	// past it a report answers 503 and GitHub sends it again.
	MaxLargeBodies = 4
	// MaxLeakBatch is the most tokens one report may hold.
	MaxLeakBatch = 20000
	// keysRefetchEvery bounds how often an unknown key identifier makes
	// the keys be fetched again: a flood of made-up identifiers costs
	// GitHub's endpoint one request a minute.
	keysRefetchEvery = time.Minute
)

// LeakAction is what a reported leak of a live key does.
type LeakAction string

// The leak actions: revoke at once (the default), or record only.
const (
	LeakRevoke LeakAction = "revoke"
	LeakNotify LeakAction = "notify"
)

// scanningActor is who reports a leak GitHub found.
var scanningActor = domain.SystemPrincipal("secret-scanning", "GitHub secret scanning")

// GitHubKeys holds the public keys GitHub signs secret scanning reports
// with: read from File, or fetched from URL, cached, and fetched again
// (at most once a minute) when a report names a key not seen yet.
type GitHubKeys struct {
	URL    string // DefaultGitHubKeysURL when both are empty
	File   string // offline: a copy of what URL serves
	Client *http.Client

	mu      sync.Mutex
	keys    map[string]*ecdsa.PublicKey
	fetched time.Time
}

type githubKeyList struct {
	PublicKeys []struct {
		KeyIdentifier string `json:"key_identifier"`
		Key           string `json:"key"`
		IsCurrent     bool   `json:"is_current"`
	} `json:"public_keys"`
}

// key returns the key named id, loading the keys when they are not
// loaded or do not hold it (no more than once a minute).
func (g *GitHubKeys) key(ctx context.Context, id string) (*ecdsa.PublicKey, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if k, ok := g.keys[id]; ok {
		return k, nil
	}
	if !g.fetched.IsZero() && time.Since(g.fetched) < keysRefetchEvery {
		// Fetched a moment ago, or tried and failed: not again yet,
		// whoever asks (an unsigned request may name any identifier).
		if g.keys == nil {
			return nil, errors.New("GitHub's keys could not be fetched a moment ago; not again before a minute has passed")
		}
		return nil, nil
	}
	keys, err := g.load(ctx)
	g.fetched = time.Now()
	if err != nil {
		if g.keys == nil {
			return nil, err
		}
		return nil, nil // keep the keys known
	}
	g.keys = keys
	return keys[id], nil
}

func (g *GitHubKeys) load(ctx context.Context) (map[string]*ecdsa.PublicKey, error) {
	var raw []byte
	if g.File != "" {
		b, err := os.ReadFile(g.File)
		if err != nil {
			return nil, err
		}
		raw = b
	} else {
		url := g.URL
		if url == "" {
			url = DefaultGitHubKeysURL
		}
		client := g.Client
		if client == nil {
			client = &http.Client{Timeout: 10 * time.Second}
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return nil, err
		}
		req.Header.Set("Accept", "application/json")
		res, err := client.Do(req)
		if err != nil {
			return nil, err
		}
		defer res.Body.Close()
		if res.StatusCode != http.StatusOK {
			return nil, fmt.Errorf("GET %s: %s", url, res.Status)
		}
		if raw, err = io.ReadAll(io.LimitReader(res.Body, 1<<20)); err != nil {
			return nil, err
		}
	}
	var list githubKeyList
	if err := json.Unmarshal(raw, &list); err != nil {
		return nil, fmt.Errorf("GitHub's secret scanning keys: %w", err)
	}
	keys := map[string]*ecdsa.PublicKey{}
	for _, k := range list.PublicKeys {
		block, _ := pem.Decode([]byte(k.Key))
		if block == nil {
			continue
		}
		pub, err := x509.ParsePKIXPublicKey(block.Bytes)
		if ec, ok := pub.(*ecdsa.PublicKey); err == nil && ok {
			keys[k.KeyIdentifier] = ec
		}
	}
	if len(keys) == 0 {
		return nil, errors.New("GitHub's secret scanning keys: no ECDSA key in the list")
	}
	return keys, nil
}

// verify checks a report's signature. Returns EUNAUTHENTICATED, or
// EUNAVAILABLE when the keys cannot be had.
func (g *GitHubKeys) verify(ctx context.Context, id, signature string, body []byte) error {
	if id == "" || signature == "" {
		return domain.Errorf(domain.EUNAUTHENTICATED, "a report needs the Github-Public-Key-Identifier and Github-Public-Key-Signature headers")
	}
	pub, err := g.key(ctx, id)
	if err != nil {
		return domain.Wrap(domain.EUNAVAILABLE, err, "GitHub's secret scanning keys cannot be had")
	}
	sig, err := base64.StdEncoding.DecodeString(signature)
	sum := sha256.Sum256(body)
	if pub == nil || err != nil || !ecdsa.VerifyASN1(pub, sum[:], sig) {
		return domain.Errorf(domain.EUNAUTHENTICATED, "the report's signature does not verify with GitHub's key %q", printableText(id, 64))
	}
	return nil
}

// reportedToken is one entry of a report.
type reportedToken struct {
	Token  string `json:"token"`
	Type   string `json:"type"`
	URL    string `json:"url"`
	Source string `json:"source"`
}

// leakFeedback is GitHub's feedback entry for one token.
type leakFeedback struct {
	TokenHash string `json:"token_hash"`
	TokenType string `json:"token_type"`
	Label     string `json:"label"`
}

// githubScanning answers POST /v1/secret-scanning/github.
func (s *Server) githubScanning(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body) // read, bounded, by bound
	if err != nil {
		s.fail(w, r, bodyError(err))
		return
	}
	// A bad signature counts as a failed authentication of the address.
	if !s.throttled(w, r, func() error {
		return s.GitHubKeys.verify(r.Context(), r.Header.Get("Github-Public-Key-Identifier"), r.Header.Get("Github-Public-Key-Signature"), body)
	}) {
		return
	}
	var tokens []reportedToken
	if err := json.Unmarshal(body, &tokens); err != nil {
		s.fail(w, r, domain.Errorf(domain.EINVALID, "the report must be a JSON array of {token, type, url, source}"))
		return
	}
	if len(tokens) > MaxLeakBatch {
		s.fail(w, r, domain.Errorf(domain.EINVALID, "a report may hold at most %d tokens", MaxLeakBatch))
		return
	}
	// Each token once, with every place the report found it at: one
	// decision on its key's history, however often the report names it.
	type found struct {
		places []domain.LeakPlace
		label  string
	}
	byToken := map[string]*found{}
	var distinct []string
	for _, t := range tokens {
		f := byToken[t.Token]
		if f == nil {
			f = &found{}
			byToken[t.Token] = f
			distinct = append(distinct, t.Token)
		}
		f.places = append(f.places, domain.LeakPlace{Source: t.Source, URL: t.URL})
	}
	for _, token := range distinct {
		f := byToken[token]
		label, _, err := s.reportLeak(r.Context(), token, f.places, "github", scanningActor)
		if err != nil {
			// Nothing is lost: the answer is not 2xx, so GitHub sends the
			// report again, and what landed is not appended twice.
			s.fail(w, r, err)
			return
		}
		f.label = label
	}
	feedback := make([]leakFeedback, len(tokens))
	for i, t := range tokens {
		sum := sha256.Sum256([]byte(t.Token))
		feedback[i] = leakFeedback{TokenHash: hex.EncodeToString(sum[:]), TokenType: t.Type, Label: byToken[t.Token].label}
	}
	writeJSON(w, http.StatusOK, feedback)
}

// leakRequest is the body of POST /v1/leaks.
type leakRequest struct {
	Token  string `json:"token"`
	URL    string `json:"url"`
	Source string `json:"source"`
}

// leakAnswer is the answer of POST /v1/leaks.
type leakAnswer struct {
	Label   string `json:"label"`
	KeyID   string `json:"key_id,omitempty"`
	OrgID   string `json:"org_id,omitempty"`
	Revoked bool   `json:"revoked"`
}

// reportLeaks answers POST /v1/leaks: another scanner's, or a person's,
// report of one leaked token.
func (s *Server) reportLeaks(w http.ResponseWriter, r *http.Request) {
	var req leakRequest
	if err := decode(w, r, &req, false); err != nil {
		s.fail(w, r, err)
		return
	}
	p := caller(r.Context())
	if err := p.MayReportLeaks(); err != nil {
		s.fail(w, r, err)
		return
	}
	label, k, err := s.reportLeak(r.Context(), req.Token, []domain.LeakPlace{{Source: req.Source, URL: req.URL}}, p.Actor.Name, p)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, leakAnswer{Label: label, KeyID: k.ID, OrgID: k.OrgID, Revoked: k.Revoked})
}

// reportLeak records the leak of token, if it is (or was) a secret of a
// key, and revokes the key unless the leak action is notify. It says
// whether the token is a key's ("true_positive") or not
// ("false_positive"), and which key, as it now stands.
func (s *Server) reportLeak(ctx context.Context, token string, places []domain.LeakPlace, reporter string, by domain.Principal) (string, domain.Key, error) {
	res := s.Index.Verify(token, s.Now())
	switch res.Code {
	case domain.VerifyMalformed, domain.VerifyNotFound:
		return "false_positive", domain.Key{}, nil
	}
	clean := make([]domain.LeakPlace, len(places))
	for i, p := range places {
		clean[i] = domain.LeakPlace{Source: printableText(p.Source, domain.MaxLeakSourceLen), URL: printableText(p.URL, domain.MaxLeakURLLen)}
	}
	out, err := s.Keys.ReportLeak(ctx, res.Key.OrgID, res.Key.ID, domain.ReportLeak{
		SecretHash: domain.HashSecret(token), Masked: domain.MaskSecret(token), Source: clean[0].Source,
		URL: clean[0].URL, More: clean[1:], Reporter: printableText(reporter, domain.MaxLeakReporterLen),
		Revoke: s.LeakAction != LeakNotify, By: by,
	})
	if err != nil {
		return "", domain.Key{}, err
	}
	k := res.Key
	k.Revoked = k.Revoked || out.Revoked
	return "true_positive", k, nil
}
