package access

import (
	"strings"
	"testing"
	"time"
)

func TestTokenRoundTrip(t *testing.T) {
	id, token, hash := newToken()
	gotID, secret, ok := splitToken(token)
	if !ok || gotID != id || !sameHash(hashSecret(secret), hash) {
		t.Fatalf("splitToken(%q) = %q, %v; want id %q and the secret that hashes to the stored hash", token, gotID, ok, id)
	}
	_, other, _ := newToken()
	if other == token {
		t.Fatal("two tokens alike")
	}
	if strings.Contains(token, string(hash)) || len(token) != tokenLen {
		t.Fatalf("token %q", token)
	}
}

func TestSplitTokenRefusesMalformed(t *testing.T) {
	_, good, _ := newToken()
	for _, tok := range []string{
		"", "Bearer " + good, good + "x", good[:len(good)-1], strings.Replace(good, "tdk_", "tdx_", 1),
		"tdk_0123456789abcdeg_" + strings.Repeat("A", secretLen), // id not hex
		"tdk_0123456789abcdef-" + strings.Repeat("A", secretLen), // no separator
	} {
		if _, _, ok := splitToken(tok); ok {
			t.Errorf("splitToken(%q) accepted", tok)
		}
	}
}

func FuzzSplitToken(f *testing.F) {
	_, good, _ := newToken()
	f.Add(good)
	f.Add("tdk_")
	f.Fuzz(func(t *testing.T, tok string) {
		id, secret, ok := splitToken(tok)
		if ok && tokenPrefix+id+"_"+secret != tok {
			t.Fatalf("split %q into %q and %q", tok, id, secret)
		}
	})
}

func TestRoles(t *testing.T) {
	for _, r := range Roles {
		if got, err := ParseRole(string(r)); err != nil || got != r {
			t.Errorf("ParseRole(%q) = %q, %v", r, got, err)
		}
		if !(Principal{Role: Admin}).May(r) {
			t.Errorf("admin may not %s", r)
		}
		for _, other := range Roles {
			if other != r && other != Admin && (Principal{Role: other}).May(r) {
				t.Errorf("%s may use a route for %s", other, r)
			}
		}
	}
	for _, bad := range []string{"", "Admin", "root", "admin "} {
		if _, err := ParseRole(bad); err == nil {
			t.Errorf("ParseRole(%q) accepted", bad)
		}
	}
}

func TestKeyUsable(t *testing.T) {
	now := time.Now()
	past, future := now.Add(-time.Second), now.Add(time.Second)
	for _, c := range []struct {
		k    Key
		want bool
	}{
		{Key{}, true},
		{Key{ExpiresAt: &future}, true},
		{Key{ExpiresAt: &past}, false},
		{Key{ExpiresAt: &now}, false},
		{Key{RevokedAt: &past}, false},
		{Key{RevokedAt: &future}, false}, // revoked is revoked, whatever the recorded time
	} {
		if got := c.k.usableAt(now); got != c.want {
			t.Errorf("%+v usable = %v, want %v", c.k, got, c.want)
		}
	}
}
