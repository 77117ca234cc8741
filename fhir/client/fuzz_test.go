package client

import (
	"encoding/json"
	"errors"
	"io/fs"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// fixtureSeeds returns every JSON file under testdata/ for seed corpora.
func fixtureSeeds(f *testing.F) [][]byte {
	f.Helper()
	var out [][]byte
	err := filepath.WalkDir("testdata", func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() && strings.HasSuffix(p, ".json") {
			out = append(out, readTestdata(f, strings.TrimPrefix(p, "testdata/")))
		}
		return err
	})
	if err != nil || len(out) == 0 {
		f.Fatalf("no fixtures: %v", err)
	}
	return out
}

func FuzzParseRetryAfter(f *testing.F) {
	now := time.Date(2026, 3, 2, 9, 0, 0, 0, time.UTC)
	for _, s := range []string{"1", "0", "120", "3600", "Wed, 21 Oct 2015 07:28:00 GMT",
		now.Add(5 * time.Second).Format("Mon, 02 Jan 2006 15:04:05 GMT"), "Monday, 02-Mar-26 09:00:30 GMT",
		"Mon Mar  2 09:00:30 2026", "", " 7 ", "-1", "1.5", "99999999999999999999999", "1e3", "\x00"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, v string) {
		d, ok := parseRetryAfter(v, now)
		if !ok && d != 0 {
			t.Fatalf("%q: not ok but delay %v", v, d)
		}
		if d < 0 || d > maxRetryAfter {
			t.Fatalf("%q: delay %v outside [0, %v]", v, d, maxRetryAfter)
		}
	})
}

func FuzzDecodeSearchBundle(f *testing.F) {
	for _, b := range fixtureSeeds(f) {
		f.Add(b)
		// The same resource wrapped as a one-entry searchset page.
		f.Add([]byte(`{"resourceType":"Bundle","type":"searchset","link":[{"relation":"next","url":"https://h/fhir?p=2"}],"entry":[{"search":{"mode":"match"},"resource":` + string(b) + `}]}`))
	}
	f.Add([]byte(`{"resourceType":"Bundle","type":"searchset","entry":[{"search":{"mode":"outcome"},"resource":{"resourceType":"OperationOutcome"}},{"resource":null},{}]}`))
	f.Add([]byte(`{"resourceType":"Bundle","type":"searchset","link":[{"relation":"next"}]}`))
	f.Add([]byte(`{"resourceType":"Bundle","type":"searchset","entry":[{"resource":[1]}]}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		entries, next, err := decodeSearchBundle(body)
		if err != nil {
			if entries != nil || next != "" {
				t.Fatal("results returned with an error")
			}
			return
		}
		for _, e := range entries {
			var m map[string]json.RawMessage
			if json.Unmarshal(e, &m) != nil {
				t.Fatalf("entry is not a JSON object: %.40q", e)
			}
		}
	})
}

func FuzzParseReference(f *testing.F) {
	base, _ := url.Parse("https://ehr.example.org/fhir/r4")
	f.Add("Patient/example")
	f.Add("Appointment/b7121f46-cf50-5cec-7cfb-5de8e42b82d2/_history/2")
	f.Add("https://ehr.example.org/fhir/r4/ExplanationOfBenefit/EOBInpatient1")
	f.Add("https://EHR.example.org:443/fhir/r4/Patient/x/_history/1")
	f.Add("https://ehr.example.org/fhir/r4/Patient/%2e%2e")
	f.Add("https://ehr.example.org/fhir/r4/../Patient/x")
	f.Add("urn:uuid:9e909e52-61a1-be50-1878-a12ef8c36346")
	f.Add("#p1")
	f.Add("Patient?identifier=http://hospital|123")
	// References as they appear in the fixtures (Reference.reference values).
	for _, b := range fixtureSeeds(f) {
		s := string(b)
		for {
			i := strings.Index(s, `"reference": "`)
			if i < 0 {
				break
			}
			s = s[i+len(`"reference": "`):]
			if j := strings.IndexByte(s, '"'); j > 0 {
				f.Add(s[:j])
			}
		}
	}
	f.Fuzz(func(t *testing.T, ref string) {
		typ, id, vid, err := parseReference(base, ref)
		if err != nil {
			if !errors.Is(err, ErrInvalidReference) && !errors.Is(err, ErrForeignReference) {
				t.Fatalf("unexpected error kind: %v", err)
			}
			if len(ref) > 100 && len(err.Error()) > 100 {
				t.Fatalf("error message grows with the input: %d bytes", len(err.Error()))
			}
			return
		}
		if !validType(typ) || !validID(id) || (vid != "" && !validID(vid)) {
			t.Fatalf("%q accepted with bad parts %q %q %q", ref, typ, id, vid)
		}
		c := &Client{base: base}
		u := c.resourceURL(typ, id)
		if !strings.HasPrefix(u.String(), "https://ehr.example.org/fhir/r4/"+typ+"/") || strings.Contains(u.Path, "/../") {
			t.Fatalf("%q leads to %s", ref, u)
		}
	})
}

func FuzzParseTokenResponse(f *testing.F) {
	for _, s := range []string{
		`{"access_token":"abc","token_type":"bearer","expires_in":300,"scope":"system/Patient.rs"}`,
		`{"access_token":"abc","token_type":"Bearer","expires_in":"3600"}`,
		`{"access_token":"abc","token_type":"bearer"}`,
		`{"access_token":"abc","token_type":"bearer","expires_in":1e400}`,
		`{"access_token":"a\u0000b","token_type":"bearer"}`,
		`{"error":"invalid_client"}`, `null`, `[]`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		tok, life, err := parseTokenResponse(body)
		if err != nil {
			return
		}
		if tok == "" || strings.ContainsAny(tok, " \r\n\t\x00") || life < 0 || life > maxTokenLifetime {
			t.Fatalf("accepted token %q lifetime %v", tok, life)
		}
		_ = oauthErrorCode(body)
	})
}

func FuzzOutcomeNotSupported(f *testing.F) {
	f.Add(outcome("not-supported", "Operation $events is not supported"))
	f.Add(outcome("processing", "Invalid request: The FHIR endpoint on this server does not know how to handle GET operation"))
	f.Add(outcome("invalid", "bad parameter"))
	for _, b := range fixtureSeeds(f) {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		if outcomeNotSupported(body) && !strings.Contains(string(body), "OperationOutcome") {
			t.Fatal("only an OperationOutcome can say not supported")
		}
	})
}

func FuzzParsePrivateKeyPEM(f *testing.F) {
	rk, ek := testKeys()
	f.Add(pkcs8PEM(f, rk))
	f.Add(pkcs8PEM(f, ek))
	f.Add(sec1PEM(f, ek))
	f.Add([]byte("-----BEGIN PRIVATE KEY-----\nMAA=\n-----END PRIVATE KEY-----\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		k, err := ParsePrivateKeyPEM(data)
		if err != nil {
			return
		}
		if _, err := jwsAlg(k); err != nil {
			t.Fatalf("accepted a key that cannot sign RS384/ES384: %v", err)
		}
	})
}
