package audit

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"testing"
	"time"
)

// TestLinkHashIsStable pins the link hash of one row to the bytes the
// chains already written were hashed with: Link, Hash and CanonicalRow may
// get faster, never different, or every existing chain stops verifying.
func TestLinkHashIsStable(t *testing.T) {
	keys, err := ParseKeys("k1:"+"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=", "k1")
	if err != nil {
		t.Fatal(err)
	}
	rows := []Row{{
		ID: 4711, TenantID: "acme", At: time.Date(2026, 12, 7, 13, 45, 1, 123456000, time.FixedZone("x", 3600)),
		Actor: "worker", Action: "notice.sent", SubjectType: "notice", SubjectID: "n-1",
		Detail: json.RawMessage(`{"z": 1.50, "a": ["<b>", "é\u2028"], "m": {"y": null, "x": true}}`), XID: 987654321,
	}, {
		ID: 4712, TenantID: "acme", At: time.Date(2026, 12, 7, 13, 45, 2, 0, time.UTC),
		Actor: "api", Action: "contact.registered", SubjectType: "contact", SubjectID: "c-9", XID: 987654322,
	}, {
		// A detail as jsonb gives it back, plain ASCII: the single-pass path.
		ID: 4713, TenantID: "acme", At: time.Date(2026, 12, 7, 13, 45, 3, 5000, time.UTC),
		Actor: "worker", Action: "notice.sent", SubjectType: "notice", SubjectID: "n-2",
		Detail: json.RawMessage(`{"q": "a&b", "n": 1.50, "z": [true, null, -0, 1E+5], "message_id": "<a1@x.example>", "m": {}}`), XID: 987654323,
	}}
	const (
		want1 = "fbb0a16bfec59d80c75ee2aeb93cc030e2e20ca22b2fd8ce6cd5ffe24370b43e"
		want2 = "30bd5cad128d34297c4fdc80df9ed5019d9a41b1d65f1e60bc43a5a7137e6cc4"
		want3 = "55fc029ca708e4246dd88bbfa39cc28a1594f210f54bec3a548004959e8759b6"
	)
	links, err := keys.Link("acme", Head{}, rows)
	if err != nil {
		t.Fatal(err)
	}
	if got := hex.EncodeToString(links[0].Hash); got != want1 {
		t.Errorf("first link %s, want %s", got, want1)
	}
	if got := hex.EncodeToString(links[1].Hash); got != want2 {
		t.Errorf("second link %s, want %s", got, want2)
	}
	if got := hex.EncodeToString(links[2].Hash); got != want3 {
		t.Errorf("third link %s, want %s", got, want3)
	}
	if _, ok := canonicalPlain(rows[2].Detail); !ok {
		t.Error("the third row's detail does not take the single-pass path")
	}
	again, err := keys.Hash("k1", links[0].Hash, 2, rows[1])
	if err != nil || hex.EncodeToString(again) != want2 {
		t.Errorf("Hash of the second row = %x, %v; want %s", again, err, want2)
	}
}

// FuzzCanonicalJSON holds CanonicalJSON, with its single-pass path for
// plain documents, to canonicalJSONReference: the same bytes, or an error
// from both.
func FuzzCanonicalJSON(f *testing.F) {
	for _, s := range []string{
		`{"notice_id": 12, "workflow": "eob-notice", "channel": "email", "revision": "3aa5bc17"}`,
		`{"b": {"y": [1, 2.50, -0, 1e5, 1E+5, true, false, null], "x": {}}, "a": [], "c": ""}`,
		`{"reasons": ["the patient opted out of email"], "redact": ["provider_name"], "allow": false}`,
		`{"a": 1, "a": 2}`, `{"<": "&"}`, `{"é": "\u2028"}`, `{"a": "\n"}`, `[1, {"z": 0, "y": 1}]`,
		`"x"`, `12`, `01`, `-`, `1.`, `{"a":1} trailing`, `{"a":1}   `, `{"a" 1}`, `{,}`, `[1,]`, `nul`, ` `, ``,
		`{"a": [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		got, gotErr := CanonicalJSON(raw)
		if len(bytes.TrimSpace(raw)) == 0 {
			if gotErr != nil || string(got) != "{}" {
				t.Fatalf("CanonicalJSON(%q) = %q, %v; want {}", raw, got, gotErr)
			}
			return
		}
		want, wantErr := canonicalJSONReference(raw)
		if (gotErr == nil) != (wantErr == nil) || !bytes.Equal(got, want) {
			t.Fatalf("CanonicalJSON(%q) = %q, %v; the reference %q, %v", raw, got, gotErr, want, wantErr)
		}
	})
}

// TestCanonicalJSONTakesThePlainPath keeps the fast path in use for the
// details Tidings writes, as jsonb gives them back.
func TestCanonicalJSONTakesThePlainPath(t *testing.T) {
	for _, s := range []string{
		`{"channel": "email", "notice_id": 12, "workflow": "eob-notice"}`,
		`{"b": {"x": {}, "y": [1, 2.50, null]}, "a": []}`,
		`{"message_id": "<a1b2c3@tidings.example>", "q": "a&b"}`,
	} {
		if _, ok := canonicalPlain([]byte(s)); !ok {
			t.Errorf("canonicalPlain(%s) declined", s)
		}
	}
	for _, s := range []string{`{"a": 1, "a": 2}`, `{"a": "\n"}`, `{"é": 1}`, `{"a": "\u0041"}`} {
		if _, ok := canonicalPlain([]byte(s)); ok {
			t.Errorf("canonicalPlain(%s) took a document the reference must decide", s)
		}
	}
}

// BenchmarkLink chains a batch of 100 rows with details as jsonb returns
// them, as the chainer does.
func BenchmarkLink(b *testing.B) {
	keys, err := ParseKeys("k1:"+"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=", "k1")
	if err != nil {
		b.Fatal(err)
	}
	rows := make([]Row, 100)
	for i := range rows {
		rows[i] = Row{ID: int64(1000 + i), TenantID: "acme", At: time.Date(2026, 12, 7, 13, 45, 1, 123456000, time.UTC),
			Actor: "worker", Action: "notice.sent", SubjectType: "notice", SubjectID: "8c1f5e2a-3b7d-4f1e-9a2b-6c0d1e2f3a4b",
			Detail: json.RawMessage(`{"run": 12345, "step": 0, "channel": "email", "revision": "3aa5bc1740b1c722e1eecfdb76eec5b805a356c2dd2669a6d7031d2788330b60", "workflow": "eob-notice", "message_id": "<a1b2c3@tidings.example>"}`),
			XID:    uint64(5000 + i)}
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := keys.Link("acme", Head{}, rows); err != nil {
			b.Fatal(err)
		}
	}
}
