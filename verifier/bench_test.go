package verifier_test

import (
	"context"
	"crypto/sha256"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/keyledger/keyledger/domain"
	"github.com/keyledger/keyledger/events"
	"github.com/keyledger/keyledger/internal/apitest"
	"github.com/keyledger/keyledger/internal/natstest"
	"github.com/keyledger/keyledger/verifier"
)

// BenchmarkVerify compares the service-side Verify, on a verifier fed from
// a stream of 10,000 keys, with the bare work it cannot avoid: SHA-256 of
// the key and a Go map look-up over the same keys.
//
//	go test -run '^$' -bench Verify -benchmem ./verifier/
func BenchmarkVerify(b *testing.B) {
	const n = 10000
	env := natstest.StartListening(b)
	secrets := make([]string, n)
	ctx := context.Background()
	var futures []jetstream.PubAckFuture
	for i := range secrets {
		s, err := domain.GenerateSecret(domain.DefaultPrefix, nil)
		if err != nil {
			b.Fatal(err)
		}
		secrets[i] = s
		e, err := domain.DecideCreate(domain.CreateKey{OrgID: "acme", Name: "bench", By: domain.SystemPrincipal("", "")}, time.Now(), 0, s)
		if err != nil {
			b.Fatal(err)
		}
		body, _ := events.Encode(e)
		m := &nats.Msg{Subject: events.Subject(e.OrgID, e.KeyID, e.Type), Data: body}
		env.Store.Signer().SignEvent(m) // as keyledger appends it: only signed events count
		f, err := env.JS.PublishMsgAsync(m)
		if err != nil {
			b.Fatal(err)
		}
		futures = append(futures, f)
	}
	for _, f := range futures {
		select {
		case <-f.Ok():
		case err := <-f.Err():
			b.Fatal(err)
		}
	}
	v, _ := service(b, env, env.Embedded.ClientURL(), verifier.Options{})
	last, _ := env.Store.LastSeq(ctx)
	if err := v.WaitFor(ctx, last); err != nil {
		b.Fatal(err)
	}

	b.Run("verifier", func(b *testing.B) {
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			if !v.Verify(secrets[i%n]).Valid() {
				b.Fatal("a loaded key does not verify")
			}
			i++
		}
	})
	b.Run("baseline-sha256-map", func(b *testing.B) {
		m := make(map[[sha256.Size]byte]int, n)
		for i, s := range secrets {
			m[sha256.Sum256([]byte(s))] = i
		}
		b.ReportAllocs()
		b.ResetTimer()
		i := 0
		for b.Loop() {
			if _, ok := m[sha256.Sum256([]byte(secrets[i%n]))]; !ok {
				b.Fatal("missing")
			}
			i++
		}
	})
}

// BenchmarkRevocationPropagation measures, over 1,000 revocations, the time
// from a revocation's HTTP acknowledgement to the moment a separate
// service's verifier (its own NATS connection, read-only credential)
// refuses the key; beside it, in the same run, the time from a raw
// JetStream publish's acknowledgement to its delivery to a plain
// subscription on another connection.
//
//	go test -run '^$' -bench Propagation -benchtime 1x ./verifier/
func BenchmarkRevocationPropagation(b *testing.B) {
	const n = 1000
	env := natstest.StartListening(b)
	api := apitest.Start(b, env)
	admin := api.Bootstrap(b, "acme")
	ctx := context.Background()
	secrets, ids := make([]string, n), make([]string, n)
	for i := range secrets {
		issued, err := api.Keys.Create(ctx, domain.CreateKey{OrgID: "acme", Name: "doomed", By: domain.SystemPrincipal("", "")})
		if err != nil {
			b.Fatal(err)
		}
		secrets[i], ids[i] = issued.Secret, issued.Key.ID
	}
	refused := make(chan string, n)
	v, _ := service(b, env, env.Embedded.ClientURL(), verifier.Options{OnRevoked: func(e verifier.Event) { refused <- e.KeyID }})
	last, _ := env.Store.LastSeq(ctx)
	if err := v.WaitFor(ctx, last); err != nil {
		b.Fatal(err)
	}

	b.Run("revoke-to-refused", func(b *testing.B) {
		for range b.N {
			lat := make([]time.Duration, 0, n)
			for i := range n {
				req, _ := http.NewRequest("DELETE", api.URL+"/v1/orgs/acme/keys/"+ids[i], nil)
				req.Header.Set("Authorization", "Bearer "+admin)
				res, err := http.DefaultClient.Do(req)
				if err != nil || res.StatusCode != http.StatusNoContent {
					b.Fatalf("revoke: %v %v", res, err)
				}
				res.Body.Close()
				acked := time.Now()
				for id := <-refused; id != ids[i]; id = <-refused {
				}
				if v.Verify(secrets[i]).Code != domain.VerifyRevoked {
					b.Fatal("told of the revocation but still not refusing")
				}
				lat = append(lat, time.Since(acked))
			}
			report(b, lat)
			ids, secrets = fresh(b, api, n)
		}
	})

	b.Run("baseline-publish-to-delivery", func(b *testing.B) {
		nk, _ := nats.NkeyOptionFromSeed(env.Embedded.Credentials.Subscriber)
		sub, err := nats.Connect(env.Embedded.ClientURL(), nk)
		if err != nil {
			b.Fatal(err)
		}
		defer sub.Close()
		got := make(chan struct{}, n)
		s, err := sub.Subscribe("keyledger.events.bench.>", func(*nats.Msg) { got <- struct{}{} })
		if err != nil {
			b.Fatal(err)
		}
		defer s.Unsubscribe()
		_ = sub.Flush()
		for range b.N {
			lat := make([]time.Duration, 0, n)
			for range n {
				e, _ := domain.DecideCreate(domain.CreateKey{OrgID: "bench", Name: "raw", By: domain.SystemPrincipal("", "")}, time.Now(), 0, secrets[0])
				body, _ := events.Encode(e)
				if _, err := env.JS.Publish(ctx, events.Subject(e.OrgID, e.KeyID, e.Type), body,
					jetstream.WithExpectLastSequenceForSubject(0, events.KeySubjects(e.OrgID, e.KeyID))); err != nil {
					b.Fatal(err)
				}
				acked := time.Now()
				<-got
				lat = append(lat, time.Since(acked))
			}
			report(b, lat)
		}
	})
}

// fresh creates n more keys for another round of revocations.
func fresh(b *testing.B, api *apitest.API, n int) (ids, secrets []string) {
	for range n {
		issued, err := api.Keys.Create(context.Background(), domain.CreateKey{OrgID: "acme", Name: "doomed", By: domain.SystemPrincipal("", "")})
		if err != nil {
			b.Fatal(err)
		}
		ids, secrets = append(ids, issued.Key.ID), append(secrets, issued.Secret)
	}
	return ids, secrets
}

func report(b *testing.B, lat []time.Duration) {
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
	b.ReportMetric(float64(len(lat)), "samples")
}
