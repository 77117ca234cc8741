package client

import (
	"bytes"
	"context"
	"crypto"
	"crypto/rand"
	"crypto/sha512"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

var testScopes = []string{"system/ExplanationOfBenefit.rs", "system/Appointment.rs", "system/Patient.rs"}

// smartFor registers key with the fake under a client id and returns a
// SMARTBackend for it, the key taken through ParsePrivateKeyPEM as an
// operator's key file would be.
func smartFor(t *testing.T, f *fakeFHIR, clientID string, keyPEM []byte) *SMARTBackend {
	t.Helper()
	key, err := ParsePrivateKeyPEM(keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	f.register(clientID, clientID+"-kid", key.Public())
	return &SMARTBackend{
		TokenURL: f.tokenURL, ClientID: clientID, KeyID: clientID + "-kid", Key: key,
		Scopes: testScopes, Now: f.clock.Now,
	}
}

func TestSMARTBackendRead(t *testing.T) {
	rk, ek := testKeys()
	for _, tc := range []struct {
		alg string
		pem []byte
	}{
		{"RS384", pkcs8PEM(t, rk)},
		{"ES384", sec1PEM(t, ek)},
	} {
		t.Run(tc.alg, func(t *testing.T) {
			f := newFake(t)
			auth := smartFor(t, f, "tidings-"+tc.alg, tc.pem)
			c, _ := f.client(t, Options{Auth: auth})
			for _, id := range []string{"EOBOral1", "EOBPharmacy1", "EB3500"} {
				got, err := c.Read(context.Background(), "ExplanationOfBenefit", id)
				if err != nil {
					t.Fatalf("%s: %v (server rejections: %v)", id, err, f.rejected())
				}
				var r struct{ ID string }
				if json.Unmarshal(got, &r) != nil || r.ID != id {
					t.Fatalf("%s: got another resource", id)
				}
			}
			if f.tokenCount() != 1 || len(f.rejected()) != 0 {
				t.Fatalf("token requests %d, rejections %v; want one accepted request", f.tokenCount(), f.rejected())
			}
			if got := f.scopes[0]; got != strings.Join(testScopes, " ") {
				t.Fatalf("scope sent: %q", got)
			}
			hdr, _ := base64.RawURLEncoding.DecodeString(strings.Split(f.assertions[0], ".")[0])
			var h map[string]string
			if json.Unmarshal(hdr, &h) != nil || h["alg"] != tc.alg || h["kid"] != "tidings-"+tc.alg+"-kid" {
				t.Fatalf("assertion header %s", hdr)
			}
		})
	}
}

func TestSMARTTokenReusedUntilNearExpiry(t *testing.T) {
	_, ek := testKeys()
	f := newFake(t)
	f.tokenLifetime = 300 * time.Second // renewed 30 s ahead: at 270 s
	c, _ := f.client(t, Options{Auth: smartFor(t, f, "tidings", pkcs8PEM(t, ek))})
	read := func() {
		t.Helper()
		if _, err := c.Read(context.Background(), "Appointment", "example"); err != nil {
			t.Fatal(err)
		}
	}
	steps := []struct {
		advance    time.Duration
		wantTokens int
	}{
		{0, 1},
		{100 * time.Second, 1},
		{169 * time.Second, 1}, // 269 s
		{2 * time.Second, 2},   // 271 s: within 30 s of expiry
		{200 * time.Second, 2},
		{100 * time.Second, 3},
		{time.Hour, 4}, // long idle: expired token is never sent
	}
	for i, s := range steps {
		f.clock.Advance(s.advance)
		read()
		if got := f.tokenCount(); got != s.wantTokens {
			t.Fatalf("step %d: %d token requests, want %d", i, got, s.wantTokens)
		}
	}
	// Every FHIR request carried a token the server still accepted: no 401s.
	for _, r := range f.seen() {
		if r.Authorization == "" {
			t.Fatal("request without a token")
		}
	}
	if len(f.seen()) != len(steps) {
		t.Fatalf("%d FHIR requests for %d reads: some were refused", len(f.seen()), len(steps))
	}

	// A short-lived token is renewed a tenth of its lifetime ahead.
	f2 := newFake(t)
	f2.tokenLifetime = 60 * time.Second
	c2, _ := f2.client(t, Options{Auth: smartFor(t, f2, "tidings", pkcs8PEM(t, ek))})
	for _, adv := range []time.Duration{0, 53 * time.Second, 2 * time.Second} {
		f2.clock.Advance(adv)
		if _, err := c2.Read(context.Background(), "Patient", "example"); err != nil {
			t.Fatal(err)
		}
	}
	if f2.tokenCount() != 2 {
		t.Fatalf("60 s token: %d token requests, want 2 (renewed at 54 s)", f2.tokenCount())
	}
}

func TestSMARTConcurrentCallersShareOneTokenRequest(t *testing.T) {
	rk, _ := testKeys()
	f := newFake(t)
	f.tokenDelay = 100 * time.Millisecond
	c, _ := f.client(t, Options{Auth: smartFor(t, f, "tidings", pkcs8PEM(t, rk))})
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for range 16 {
		wg.Go(func() {
			_, err := c.Read(context.Background(), "Patient", "Patient2")
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if f.tokenCount() != 1 {
		t.Fatalf("%d token requests for 16 concurrent reads, want 1", f.tokenCount())
	}
}

func TestSMARTJTINeverReused(t *testing.T) {
	_, ek := testKeys()
	f := newFake(t)
	f.tokenLifetime = 10 * time.Second
	c, _ := f.client(t, Options{Auth: smartFor(t, f, "tidings", pkcs8PEM(t, ek))})
	const n = 25
	for range n {
		if _, err := c.Read(context.Background(), "Patient", "example"); err != nil {
			t.Fatalf("%v (rejections %v)", err, f.rejected())
		}
		f.clock.Advance(11 * time.Second) // every read needs a new token
	}
	seen := map[string]bool{}
	for _, a := range f.assertions {
		claims, _ := base64.RawURLEncoding.DecodeString(strings.Split(a, ".")[1])
		var c struct {
			Jti string `json:"jti"`
		}
		_ = json.Unmarshal(claims, &c)
		if seen[c.Jti] {
			t.Fatal("jti reused")
		}
		seen[c.Jti] = true
	}
	if len(seen) != n || len(f.rejected()) != 0 {
		t.Fatalf("%d distinct jti for %d token requests; rejections %v", len(seen), n, f.rejected())
	}
}

func TestUnauthorizedRenewsTokenOnce(t *testing.T) {
	rk, _ := testKeys()
	f := newFake(t)
	c, _ := f.client(t, Options{Auth: smartFor(t, f, "tidings", pkcs8PEM(t, rk))})
	ctx := context.Background()
	if _, err := c.Read(ctx, "Patient", "example"); err != nil {
		t.Fatal(err)
	}
	f.revokeTokens() // the server forgets the token well before its expires_in
	if _, err := c.Read(ctx, "Patient", "example"); err != nil {
		t.Fatalf("after revocation: %v", err)
	}
	if f.tokenCount() != 2 {
		t.Fatalf("%d token requests, want 2", f.tokenCount())
	}
	seen := f.seen()
	if len(seen) != 3 || seen[1].Authorization == seen[2].Authorization {
		t.Fatalf("want the 401 then a retry with a new token; requests: %d", len(seen))
	}

	// A server that refuses every token: one renewal, then ErrUnauthorized.
	f.setHook(func(w http.ResponseWriter, r *http.Request) bool {
		writeJSON(w, http.StatusUnauthorized, outcome("login", "no"))
		return true
	})
	tokensBefore, reqsBefore := f.tokenCount(), len(f.seen())
	_, err := c.Read(ctx, "Patient", "example")
	if !errors.Is(err, ErrUnauthorized) || !strings.Contains(err.Error(), "401") {
		t.Fatalf("err = %v, want ErrUnauthorized naming 401", err)
	}
	if f.tokenCount()-tokensBefore != 1 || len(f.seen())-reqsBefore != 2 {
		t.Fatalf("token requests +%d, FHIR requests +%d; want +1 and +2", f.tokenCount()-tokensBefore, len(f.seen())-reqsBefore)
	}

	// 403: not renewed, not retried.
	f.setHook(func(w http.ResponseWriter, r *http.Request) bool {
		writeJSON(w, http.StatusForbidden, outcome("forbidden", "scope"))
		return true
	})
	tokensBefore, reqsBefore = f.tokenCount(), len(f.seen())
	if _, err := c.Read(ctx, "Patient", "example"); !errors.Is(err, ErrUnauthorized) {
		t.Fatalf("403: %v", err)
	}
	if f.tokenCount() != tokensBefore || len(f.seen())-reqsBefore != 1 {
		t.Fatal("403 must not renew or retry")
	}

	// A static token cannot be renewed: one request.
	f.setHook(nil)
	f.staticToken = "right"
	sc, _ := f.client(t, Options{Auth: StaticBearer{Token: "wrong"}})
	reqsBefore = len(f.seen())
	if _, err := sc.Read(ctx, "Patient", "example"); !errors.Is(err, ErrUnauthorized) || len(f.seen())-reqsBefore != 1 {
		t.Fatalf("static bearer 401: %v", err)
	}
}

func TestSMARTTokenEndpointRejection(t *testing.T) {
	rk, ek := testKeys()
	f := newFake(t)
	auth := smartFor(t, f, "tidings", pkcs8PEM(t, ek))
	auth.Key = rk // signs with a key the server does not have for this kid
	c, _ := f.client(t, Options{Auth: auth})
	_, err := c.Read(context.Background(), "Patient", "example")
	if !errors.Is(err, ErrUnauthorized) || !strings.Contains(err.Error(), "invalid_client") {
		t.Fatalf("err = %v, want ErrUnauthorized with invalid_client", err)
	}
	if len(f.seen()) != 0 {
		t.Fatal("no FHIR request may go out without a token")
	}
	if r := f.rejected(); len(r) != 1 || !strings.Contains(r[0], "alg") {
		t.Fatalf("server rejections %v", r)
	}

	// The token endpoint redirecting elsewhere: the assertion is not re-sent.
	f2 := newFake(t)
	a2 := smartFor(t, f2, "tidings", pkcs8PEM(t, ek))
	a2.TokenURL = f2.srv.URL + "/fhir/redirect-token"
	f2.setHook(func(w http.ResponseWriter, r *http.Request) bool {
		http.Redirect(w, r, f2.tokenURL, http.StatusTemporaryRedirect)
		return true
	})
	c2, _ := f2.client(t, Options{Auth: a2})
	if _, err := c2.Read(context.Background(), "Patient", "example"); !errors.Is(err, ErrRedirectRefused) || f2.tokenCount() != 0 {
		t.Fatalf("token redirect: err=%v, token endpoint hit %d times", err, f2.tokenCount())
	}
}

// TestFakeTokenEndpointRejects shows the fake's verification is real, so
// the SMART tests above can fail: each broken assertion is refused.
func TestFakeTokenEndpointRejects(t *testing.T) {
	rk, ek := testKeys()
	f := newFake(t)
	f.register("es", "k", &ek.PublicKey)
	f.register("rs", "k", &rk.PublicKey)
	now := f.clock.Now()
	sign := func(key crypto.Signer, alg string, header, claims map[string]any, asn1ECDSA bool) string {
		h, _ := json.Marshal(header)
		c, _ := json.Marshal(claims)
		input := base64.RawURLEncoding.EncodeToString(h) + "." + base64.RawURLEncoding.EncodeToString(c)
		d := sha512.Sum384([]byte(input))
		sig, err := key.Sign(rand.Reader, d[:], crypto.SHA384)
		if err != nil {
			t.Fatal(err)
		}
		if alg == "ES384" && !asn1ECDSA {
			sig, _ = ecdsaRaw(sig, 48)
		}
		return input + "." + base64.RawURLEncoding.EncodeToString(sig)
	}
	claims := func(mod func(map[string]any)) map[string]any {
		c := map[string]any{"iss": "es", "sub": "es", "aud": f.tokenURL, "exp": now.Add(4 * time.Minute).Unix(), "iat": now.Unix(), "jti": base64.RawURLEncoding.EncodeToString([]byte(time.Now().String()))}
		if mod != nil {
			mod(c)
		}
		return c
	}
	es := map[string]any{"alg": "ES384", "kid": "k", "typ": "JWT"}
	good := sign(ek, "ES384", es, claims(nil), false)
	if err := f.verifyAssertion(good); err != nil {
		t.Fatalf("a good assertion was refused: %v", err)
	}
	for name, a := range map[string]string{
		"replayed jti":        good,
		"ASN.1 ECDSA":         sign(ek, "ES384", es, claims(nil), true),
		"expired":             sign(ek, "ES384", es, claims(func(c map[string]any) { c["exp"] = now.Add(-time.Second).Unix() }), false),
		"exp over 5 min":      sign(ek, "ES384", es, claims(func(c map[string]any) { c["exp"] = now.Add(6 * time.Minute).Unix() }), false),
		"wrong aud":           sign(ek, "ES384", es, claims(func(c map[string]any) { c["aud"] = f.base }), false),
		"sub differs":         sign(ek, "ES384", es, claims(func(c map[string]any) { c["sub"] = "other" }), false),
		"no jti":              sign(ek, "ES384", es, claims(func(c map[string]any) { delete(c, "jti") }), false),
		"wrong kid":           sign(ek, "ES384", map[string]any{"alg": "ES384", "kid": "x"}, claims(nil), false),
		"alg none":            strings.TrimRight(sign(ek, "ES384", map[string]any{"alg": "none", "kid": "k"}, claims(nil), false), "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_"),
		"RS384 key as ES384":  sign(rk, "RS384", es, claims(func(c map[string]any) { c["iss"], c["sub"] = "rs", "rs" }), false),
		"tampered claims":     strings.Replace(good, ".", ".e30", 1),
		"unregistered client": sign(ek, "ES384", es, claims(func(c map[string]any) { c["iss"], c["sub"] = "nobody", "nobody" }), false),
	} {
		if err := f.verifyAssertion(a); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestParseTokenResponse(t *testing.T) {
	for _, tc := range []struct {
		body     string
		lifetime time.Duration
		ok       bool
	}{
		{`{"access_token":"abc","token_type":"bearer","expires_in":300}`, 300 * time.Second, true},
		{`{"access_token":"abc","token_type":"Bearer","expires_in":"3600"}`, time.Hour, true},
		{`{"access_token":"abc","token_type":"bearer"}`, 0, true},
		{`{"access_token":"abc","token_type":"bearer","expires_in":99999999999}`, 24 * time.Hour, true},
		{`{"access_token":"abc","token_type":"mac","expires_in":300}`, 0, false},
		{`{"access_token":"","token_type":"bearer"}`, 0, false},
		{`{"access_token":"a b","token_type":"bearer"}`, 0, false},
		{`{"access_token":"abc","token_type":"bearer","expires_in":-1}`, 0, false},
		{`{"access_token":"abc","token_type":"bearer","expires_in":1.5}`, 0, false},
		{`{"token_type":"bearer"}`, 0, false},
		{`[]`, 0, false},
	} {
		tok, life, err := parseTokenResponse([]byte(tc.body))
		if (err == nil) != tc.ok || (tc.ok && (tok != "abc" || life != tc.lifetime)) {
			t.Errorf("%s: tok=%q life=%v err=%v", tc.body, tok, life, err)
		}
		if err != nil && (bytes.Contains([]byte(err.Error()), []byte("abc")) || !errors.Is(err, ErrInvalidResponse)) {
			t.Errorf("%s: error %v", tc.body, err)
		}
	}
}
