package keycheck

import (
	"math"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"

	"github.com/BurntSushi/toml"

	"github.com/keyledger/keyledger/domain"
)

// samples are generated keys and the near-misses a scanner must refuse:
// one character changed, cut short, one too many, an upper-case prefix,
// no prefix, a prefix too long.
func samples(t *testing.T) (keys, misses []string) {
	for _, prefix := range []string{"c8k", "c8k", "a", "acme2", strings.Repeat("p", 20)} {
		for range 40 {
			k, err := domain.GenerateSecret(prefix, nil)
			if err != nil {
				t.Fatal(err)
			}
			keys = append(keys, k)
			i := strings.IndexByte(k, '_') + 7
			changed := []byte(k)
			changed[i] = map[bool]byte{true: 'B', false: 'A'}[changed[i] == 'A']
			misses = append(misses, string(changed), k[:len(k)-1], k+"A", strings.ToUpper(k[:1])+k[1:], k[strings.IndexByte(k, '_'):], "q"+strings.Repeat("p", 20)+k[strings.IndexByte(k, '_'):])
		}
	}
	return keys, misses
}

// TestGoCheck: Valid agrees with keyledger's own check on every key and
// near-miss.
func TestGoCheck(t *testing.T) {
	keys, misses := samples(t)
	for _, k := range keys {
		if !Valid(k) {
			t.Errorf("Valid(%s) = false", k)
		}
	}
	for _, m := range misses {
		if Valid(m) || domain.WellFormed(m) {
			t.Errorf("%q: Valid %v, WellFormed %v, want both false", m, Valid(m), domain.WellFormed(m))
		}
	}
}

// TestPythonCheck runs keycheck.py over the same keys and near-misses.
func TestPythonCheck(t *testing.T) {
	python, err := exec.LookPath("python3")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("python3 is missing under CI=true: .ci/run must install it")
		}
		t.Skip("python3 is not installed: the Python check is not run")
	}
	keys, misses := samples(t)
	cmd := exec.Command(python, "keycheck.py")
	cmd.Stdin = strings.NewReader(strings.Join(append(keys, misses...), "\n") + "\n")
	out, err := cmd.Output()
	if err != nil {
		t.Fatal(err)
	}
	got := strings.Fields(string(out))
	if len(got) != len(keys)+len(misses) {
		t.Fatalf("%d answers for %d lines", len(got), len(keys)+len(misses))
	}
	for i, g := range got {
		want := map[bool]string{true: "valid", false: "invalid"}[i < len(keys)]
		if g != want {
			t.Errorf("keycheck.py on %q: %s, want %s", append(keys, misses...)[i], g, want)
		}
	}
}

// TestGitleaksRule reads gitleaks.toml as gitleaks does (its regex is Go's
// RE2) and checks it against keys of the default prefix and near-misses:
// it finds every key in text, whose entropy passes the rule's, and no
// near-miss but a changed character (a checksum only the checks see).
func TestGitleaksRule(t *testing.T) {
	var cfg struct {
		Rules []struct {
			ID, Regex   string
			SecretGroup int
			Entropy     float64
			Keywords    []string
		}
	}
	if _, err := toml.DecodeFile("gitleaks.toml", &cfg); err != nil || len(cfg.Rules) != 1 {
		t.Fatalf("gitleaks.toml: %v %+v", err, cfg)
	}
	rule := cfg.Rules[0]
	re := regexp.MustCompile(rule.Regex)
	keys, misses := samples(t)
	for i, k := range keys {
		if !strings.HasPrefix(k, "c8k_") {
			continue
		}
		for _, text := range []string{k, "API_KEY=" + k + "\n", `token: "` + k + `"`} {
			m := re.FindStringSubmatch(text)
			if m == nil || m[rule.SecretGroup] != k {
				t.Errorf("the rule misses %s in %q", k, text)
			}
		}
		if e := entropy(k); e < rule.Entropy {
			t.Errorf("a generated key's entropy %.2f is below the rule's %.2f", e, rule.Entropy)
		}
		if !strings.Contains(k, rule.Keywords[0]) {
			t.Errorf("the keyword %q is not in %s", rule.Keywords[0], k)
		}
		for j, m := range misses[6*i : 6*i+6] {
			if hit := re.FindStringSubmatch(" " + m + " "); (hit != nil) != (j == 0) {
				t.Errorf("near-miss %q: the rule matches %v", m, hit != nil)
			}
		}
	}
	if re.MatchString("c8k_"+strings.Repeat("a", 49)) && entropy("c8k_"+strings.Repeat("a", 49)) >= rule.Entropy {
		t.Error("a run of one letter passes the rule's entropy")
	}
}

// entropy is Shannon entropy in bits per character, as gitleaks computes it.
func entropy(s string) float64 {
	counts := map[rune]float64{}
	for _, r := range s {
		counts[r]++
	}
	var e float64
	for _, c := range counts {
		p := c / float64(len(s))
		e -= p * math.Log2(p)
	}
	return e
}
