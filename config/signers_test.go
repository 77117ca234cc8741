package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestMessageSignerSpecs(t *testing.T) {
	dir := t.TempDir()
	crt, key, asc := filepath.Join(dir, "s.crt"), filepath.Join(dir, "s.key"), filepath.Join(dir, "p.asc")
	for _, f := range []string{crt, key, asc} {
		if err := os.WriteFile(f, []byte("not read here"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	e := validEnv()
	e["TIDINGS_SMIME_KEYS"] = "acme:" + crt + ":" + key + ", *:" + crt + ":" + key
	e["TIDINGS_OPENPGP_KEYS"] = "acme:" + asc
	c, _ := FromEnv(env(e))
	specs, err := c.MessageSignerSpecs()
	if err != nil {
		t.Fatal(err)
	}
	want := []MessageSignerSpec{{"acme", "smime", crt, key}, {"*", "smime", crt, key}, {"acme", "openpgp", "", asc}}
	if len(specs) != len(want) {
		t.Fatalf("specs %+v, want %+v", specs, want)
	}
	for i := range want {
		if specs[i] != want[i] {
			t.Fatalf("spec %d: %+v, want %+v", i, specs[i], want[i])
		}
	}
	for env_, bad := range map[string]string{
		"TIDINGS_SMIME_KEYS":   "acme:" + crt,
		"TIDINGS_OPENPGP_KEYS": "acme:/nonexistent/k.asc",
	} {
		e := validEnv()
		e[env_] = bad
		c, _ := FromEnv(env(e))
		if p := strings.Join(c.Validate(RoleWorker), "\n"); !strings.Contains(p, env_) {
			t.Errorf("%s=%q: problems %q", env_, bad, p)
		}
	}
}
