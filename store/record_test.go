package store

import (
	"encoding/json"
	"os"
	"reflect"
	"testing"

	"github.com/tidings-health/tidings/fhir"
)

// FuzzDecodeRecord holds the framed reader to encoding/json: every record
// encodeRecord writes decodes to the same focus, related resources and
// URLs either way, and the framed reader takes the fast path for the
// shapes intake stores (object resources).
func FuzzDecodeRecord(f *testing.F) {
	f.Add([]byte(`{"resourceType":"ExplanationOfBenefit","id":"x","text":{"div":"<div>a \"quoted\" ] } brace\\\\</div>"}}`), []byte(`{"resourceType":"Patient","name":[{"family":"[{"}]}`), "urn:uuid:1", true)
	f.Add([]byte("{\n  \"id\": \"y\",\n  \"a\": [1, 2, {\"b\": null}]\n}"), []byte(`{}`), `https://ehr.example/Patient/"q"`, false)
	f.Add([]byte(`{}`), []byte(`"not an object"`), "", true)
	f.Add([]byte(`{"a":"\u005d"}`), []byte(`[1]`), "x", true)
	f.Fuzz(func(t *testing.T, focus, related []byte, url string, withRelated bool) {
		if !json.Valid(focus) || focus[0] != '{' {
			return
		}
		ev := fhir.Event{Focus: focus}
		if withRelated {
			if !json.Valid(related) {
				return
			}
			ev.Related = []json.RawMessage{related, focus}
			ev.RelatedURLs = []string{url, url + "2"}
		}
		stored, err := encodeRecord(ev)
		if err != nil {
			t.Fatal(err)
		}
		plain, _, err := decompressRecord(stored)
		if err != nil {
			t.Fatal(err)
		}
		var want eventRecord
		if err := json.Unmarshal(plain, &want); err != nil {
			t.Fatalf("encoding/json cannot read the record: %v", err)
		}
		got, err := decodeRecord(plain)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("framed reader\n%+v\nencoding/json\n%+v", got, want)
		}
		objects := !withRelated || (len(related) > 0 && related[0] == '{')
		if _, fast := splitRecord(plain); fast != objects {
			t.Fatalf("fast path %v for a record of object resources %v", fast, objects)
		}
	})
}

// A record not framed as encodeRecord frames it (an older one, written by
// encoding/json with its own key order and spacing) still decodes.
func TestDecodeRecordOtherShapes(t *testing.T) {
	for _, plain := range []string{
		`{"related":[{"resourceType":"Patient"}],"focus":{"id":"x"}}`,
		`{ "focus" : {"id":"x"} }`,
		`{"focus":{"id":"x"},"related_urls":["u"],"related":[{"a":1}]}`,
	} {
		var want eventRecord
		if err := json.Unmarshal([]byte(plain), &want); err != nil {
			t.Fatal(err)
		}
		if _, fast := splitRecord([]byte(plain)); fast {
			t.Errorf("%s: taken as framed", plain)
		}
		got, err := decodeRecord([]byte(plain))
		if err != nil || !reflect.DeepEqual(got, want) {
			t.Errorf("%s: got %+v, %v; want %+v", plain, got, err, want)
		}
	}
	if _, err := decodeRecord([]byte(`{"focus":{"id":`)); err == nil {
		t.Error("a cut record decoded")
	}
}

// BenchmarkDecodeRecord reads back the record of a CARIN EOB (the one
// tidings load and the replay send), framed and by encoding/json.
func BenchmarkDecodeRecord(b *testing.B) {
	eob, err := os.ReadFile("../examples/replay/ExplanationOfBenefit-EOBProfessional1.json")
	if err != nil {
		b.Fatal(err)
	}
	stored, err := encodeRecord(fhir.Event{Focus: eob})
	if err != nil {
		b.Fatal(err)
	}
	plain, _, err := decompressRecord(stored)
	if err != nil {
		b.Fatal(err)
	}
	b.Run("framed", func(b *testing.B) {
		for b.Loop() {
			if _, err := decodeRecord(plain); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("encoding-json", func(b *testing.B) {
		for b.Loop() {
			var rec eventRecord
			if err := json.Unmarshal(plain, &rec); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkEncodeRecord writes the record of the same CARIN EOB as intake
// stores it (compressed; sealing is not included).
func BenchmarkEncodeRecord(b *testing.B) {
	eob, err := os.ReadFile("../examples/replay/ExplanationOfBenefit-EOBProfessional1.json")
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(eob)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := encodeRecord(fhir.Event{Focus: eob}); err != nil {
			b.Fatal(err)
		}
	}
}
