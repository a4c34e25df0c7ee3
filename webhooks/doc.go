// Package webhooks delivers an org's key events to its webhook endpoints
// as Standard Webhooks (standardwebhooks.com) deliveries: each signed with
// HMAC-SHA256 over id.timestamp.body under the endpoint's whsec_ secret,
// driven by one durable JetStream consumer per endpoint on KEYLEDGER, so
// that deliveries are at least once, in stream order (so in order per
// key), survive restarts, and no two instances send the same attempt.
//
// Endpoints are event-sourced like keys (domain.Webhook): Registry folds
// their events. Their signing secrets never reach the stream: the Vault
// seals them (AES-256-GCM, under a key every instance shares) into a
// key-value bucket, and events carry only a reference and a masked form.
package webhooks
