package webhooks_test

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/keyledger/keyledger/internal/natstest"
	"github.com/keyledger/keyledger/webhooks"
)

func TestVaultRefusesAnotherKeyAndTampering(t *testing.T) {
	env := natstest.Start(t)
	ctx := context.Background()
	dir := t.TempDir()
	k1, err := webhooks.LoadKey(filepath.Join(dir, "a.key"), true)
	if err != nil {
		t.Fatal(err)
	}
	again, err := webhooks.LoadKey(filepath.Join(dir, "a.key"), true)
	if err != nil || !bytes.Equal(again, k1) {
		t.Fatalf("the key file read back: %v", err)
	}
	if fi, _ := os.Stat(filepath.Join(dir, "a.key")); fi.Mode().Perm() != 0o600 {
		t.Errorf("key file mode %04o", fi.Mode().Perm())
	}
	k2, _ := webhooks.LoadKey(filepath.Join(dir, "b.key"), true)
	v1, err := webhooks.OpenVault(ctx, env.JS, k1, 1)
	if err != nil {
		t.Fatal(err)
	}
	v2, _ := webhooks.OpenVault(ctx, env.JS, k2, 1)
	ref, err := v1.Put(ctx, "wh_01M8DA3SKKJTHVC8T1EHEEKS8P", []byte("the secret"))
	if err != nil {
		t.Fatal(err)
	}
	if got, err := v1.Get(ctx, "wh_01M8DA3SKKJTHVC8T1EHEEKS8P", ref); err != nil || string(got) != "the secret" {
		t.Fatalf("v1.Get: %q, %v", got, err)
	}
	if _, err := v2.Get(ctx, "wh_01M8DA3SKKJTHVC8T1EHEEKS8P", ref); err == nil || !strings.Contains(err.Error(), "another webhook secrets key") {
		t.Errorf("another instance's key opened it: %v", err)
	}
	// A sealed value moved to another endpoint does not open there.
	kv, _ := env.JS.KeyValue(ctx, webhooks.SecretsBucket)
	ent, _ := kv.Get(ctx, "wh_01M8DA3SKKJTHVC8T1EHEEKS8P."+ref)
	if _, err := kv.Put(ctx, "wh_01M8DA3SKKJTHVC8T1EHEEKS8Q."+ref, ent.Value()); err != nil {
		t.Fatal(err)
	}
	if _, err := v1.Get(ctx, "wh_01M8DA3SKKJTHVC8T1EHEEKS8Q", ref); err == nil {
		t.Error("a sealed secret moved to another endpoint opened")
	}
	if v1.ConsumerName("wh_01M8DA3SKKJTHVC8T1EHEEKS8P") == v2.ConsumerName("wh_01M8DA3SKKJTHVC8T1EHEEKS8P") {
		t.Error("consumer names do not depend on the shared key")
	}
	_ = os.Chmod(filepath.Join(dir, "a.key"), 0o644)
	if _, err := webhooks.LoadKey(filepath.Join(dir, "a.key"), false); err == nil {
		t.Error("a key file others may read was accepted")
	}
}
