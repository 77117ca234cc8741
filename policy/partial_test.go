package policy

import (
	"bytes"
	"context"
	"encoding/json"
	"io/fs"
	"reflect"
	"strings"
	"testing"
	"testing/fstest"

	policyfiles "github.com/tidings-health/tidings/rego"
)

// partialSeeds are inputs that reach every rule of the shipped policy, as
// JSON: the allowed EOB, each reason to deny, each obligation.
var partialSeeds = []string{
	`{"notice_type":"eob","channel":{"type":"email","tls_enforced":true},"payload":{"payer_name":"P","service_date":"2024-03-01","provider_name":"C","patient_share":45.2,"portal_url":"https://p.example/x"},"purpose":"payment","contact":{"has_confidential_address":false,"marketing_authorized":false}}`,
	`{"notice_type":"eob","channel":{"type":"email","tls_enforced":true,"encryption_available":true},"payload":{"payer_name":"P","portal_url":"https://p.example/x"},"facts":{"use":"claim","outcome":"complete","sensitive_categories":[],"has_sensitive_diagnosis":false},"contact":{"opted_out_channels":["sms"],"restrictions":["appointment"],"language":"es"}}`,
	`{"notice_type":"eob","channel":{"type":"email","tls_enforced":false},"payload":{"payer_name":"P","provider_name":"C","portal_url":"https://p.example/x"}}`,
	`{"notice_type":"eob","channel":{"type":"email","tls_enforced":true,"encryption_available":true},"payload":{"provider_name":"C","portal_url":"u"},"facts":{"sensitive_categories":["mental_health"]}}`,
	`{"notice_type":"eob","channel":{"type":"email","tls_enforced":true},"payload":{"provider_name":"C","portal_url":"u"},"facts":{"has_sensitive_diagnosis":"yes"}}`,
	`{"notice_type":"appointment","channel":{"type":"email","tls_enforced":true},"payload":{"appointment_date":"2024-03-01","location_name":"L","provider_name":"D","portal_url":"u"},"facts":{"sensitive_categories":["hiv_sti"]}}`,
	`{"notice_type":"appointment","channel":{"type":"sms"},"payload":{"provider_name":"D","portal_url":"u"}}`,
	`{"notice_type":"appointment","channel":{"type":"push"},"payload":{"portal_url":"u"},"contact":{"opted_out_channels":["push"]}}`,
	`{"notice_type":"eob","channel":{"type":"portal","tls_enforced":true},"payload":{"portal_url":"u"},"contact":{"has_confidential_address":true}}`,
	`{"notice_type":"eob","channel":{"type":"fax"},"payload":{"portal_url":"u"}}`,
	`{"notice_type":"claim","channel":{"type":"email","tls_enforced":true},"payload":{"portal_url":"u"}}`,
	`{"notice_type":"eob","channel":{"type":"email","tls_enforced":true},"payload":{"portal_url":"u","diagnosis":"F32.9"}}`,
	`{"notice_type":"eob","channel":{"type":"email","tls_enforced":true},"payload":{"portal_url":" "}}`,
	`{"notice_type":"eob","channel":{"type":"email","tls_enforced":true},"payload":{"portal_url":7}}`,
	`{"notice_type":"eob","channel":{"type":"email","tls_enforced":true},"payload":{"payer_name":"P"}}`,
	`{"notice_type":"eob","channel":{"type":"email","tls_enforced":true},"payload":"x"}`,
	`{"channel":{},"payload":{"portal_url":"u"}}`,
	`{"notice_type":"","channel":{"type":7}}`,
	`{"notice_type":"eob","channel":{"type":"email","message_encrypted":true},"payload":{"portal_url":"u"},"purpose":"marketing","contact":{"restrictions":["all"]}}`,
	`{"notice_type":"eob","channel":{"type":"email","tls_enforced":true},"payload":{"portal_url":"u"},"purpose":"marketing","contact":{"marketing_authorized":true}}`,
	`{"notice_type":"eob","channel":{"type":"email","tls_enforced":true},"payload":{"portal_url":"u"},"facts":{"use":"preauthorization","outcome":"error"}}`,
	`{"notice_type":"eob","channel":{"type":"email","tls_enforced":true},"payload":{"portal_url":"u"},"facts":{"use":"claim","outcome":"error"},"contact":{"restrictions":["eob"]}}`,
	`{}`,
}

// FuzzPartialEvalAgrees holds the partially evaluated queries that Decide
// uses, general and specialised to the input's notice type and channel, to
// the policies as written, which the dry run traces and the Rego tests
// exercise: on any input document they give the same decision, or all none.
func FuzzPartialEvalAgrees(f *testing.F) {
	for _, s := range partialSeeds {
		f.Add([]byte(s))
	}
	revs := partialRevisions(f)
	f.Fuzz(func(t *testing.T, raw []byte) {
		input, err := parseInput(json.RawMessage(raw))
		if err != nil {
			t.Skip()
		}
		ctx := context.Background()
		for name, rev := range revs {
			want, wantErr := rev.decide(ctx, &rev.query, input)
			got, gotErr := rev.decide(ctx, rev.fast, input)
			if (wantErr == nil) != (gotErr == nil) || !reflect.DeepEqual(got, want) {
				t.Fatalf("%s: partially evaluated query decided %+v, %v; the policies as written %+v, %v", name, got, gotErr, want, wantErr)
			}
			key, ok := specKeyOf(input)
			if !ok {
				continue
			}
			q := rev.special.query(ctx, key)
			if q == nil {
				continue // past maxSpecialised keys; the seeds' keys are checked by TestSpecialisedDecisionsMatchTheGeneralQuery
			}
			got, gotErr = rev.decide(ctx, q, input)
			if (wantErr == nil) != (gotErr == nil) || !reflect.DeepEqual(got, want) {
				t.Fatalf("%s: query specialised to %+v decided %+v, %v; the policies as written %+v, %v", name, key, got, gotErr, want, wantErr)
			}
		}
	})
}

// partialRevisions are the shipped policies, and the same with
// settings.sensitive.prefer_message_encryption switched on, since partial
// evaluation folds the settings into the query.
func partialRevisions(tb testing.TB) map[string]*revision {
	tb.Helper()
	flipped := fstest.MapFS{}
	err := fs.WalkDir(policyfiles.FS, ".", func(name string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || strings.HasSuffix(name, "_test.rego") {
			return err
		}
		b, err := fs.ReadFile(policyfiles.FS, name)
		if name == "data/settings.json" {
			on := bytes.Replace(b, []byte(`"prefer_message_encryption": false`), []byte(`"prefer_message_encryption": true`), 1)
			if bytes.Equal(on, b) {
				tb.Fatal("data/settings.json: prefer_message_encryption is not false; update this test")
			}
			b = on
		}
		flipped[name] = &fstest.MapFile{Data: b}
		return err
	})
	if err != nil {
		tb.Fatal(err)
	}
	e, err := New(context.Background(), flipped)
	if err != nil {
		tb.Fatal(err)
	}
	revs := map[string]*revision{"shipped": mustEngine(tb).active.Load(), "prefer_message_encryption": e.active.Load()}
	for name, rev := range revs {
		if rev.fast == nil {
			tb.Fatalf("%s: the active revision has no partially evaluated query", name)
		}
	}
	return revs
}

// TestPartialSeedsCoverRules keeps FuzzPartialEvalAgrees meaningful: its
// seeds must be allowed and denied, and set every obligation and redaction
// under one of the settings it runs with.
func TestPartialSeedsCoverRules(t *testing.T) {
	var allowed, denied, redacted int
	obligations := map[string]bool{}
	for _, rev := range partialRevisions(t) {
		for _, s := range partialSeeds {
			input, err := parseInput(json.RawMessage(s))
			if err != nil {
				t.Fatalf("seed %s: %v", s, err)
			}
			d, err := rev.decide(context.Background(), rev.fast, input)
			if err != nil {
				t.Fatalf("seed %s: %v", s, err)
			}
			if d.Allow {
				allowed++
			} else {
				denied++
			}
			if len(d.Redact) > 0 {
				redacted++
			}
			for _, o := range d.Obligations {
				obligations[o] = true
			}
		}
	}
	for _, o := range []string{"portal_only", "requires_message_encryption", "generic_provider_label", "route_to_confidential_address"} {
		if !obligations[o] {
			t.Errorf("no seed sets obligation %s", o)
		}
	}
	if allowed < 3 || denied < 10 || redacted < 3 {
		t.Errorf("seeds: %d allowed, %d denied, %d redacted; want at least 3, 10, 3", allowed, denied, redacted)
	}
}
