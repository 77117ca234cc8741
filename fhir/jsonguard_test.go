package fhir

import (
	"bytes"
	"encoding/json"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// The quick scan only ever says "fine" where the thorough walk says so too,
// and every problem is still found with the walk's message.
func TestCheckJSONQuickAgreesWithWalk(t *testing.T) {
	deep := strings.Repeat("[", MaxDepth) + strings.Repeat("]", MaxDepth)
	tooDeep := strings.Repeat("[", MaxDepth+1) + strings.Repeat("]", MaxDepth+1)
	for _, tc := range []struct {
		doc string
		ok  bool
		msg string // in the error
	}{
		{`{"a":1,"b":[{"a":2}],"c":{"a":"b,\"{"}}`, true, ""},
		{`{"a":1,"A":2}`, false, "repeats a key"},
		{`{"type":1,"x":{"y":2},"TYPE":3}`, false, "repeats a key"},
		{`{"x":{"a":1},"y":{"a":1}}`, true, ""},
		{`{"a":"x","b":"a"}`, true, ""}, // a value that equals a key is no key
		{`{"t\u0079pe":1,"type":2}`, false, "repeats a key"},
		{`{"é":1,"É":2}`, false, "repeats a key"},
		{`{"é":1,"e":2}`, true, ""},
		{deep, true, ""},
		{tooDeep, false, "nests deeper"},
		{`{"a":1} {"b":2}`, false, "after the top-level value"},
		{`{"a":}`, false, "not valid JSON"},
		{`["\\\"",{"k":1,"k ":2}]`, true, ""},
	} {
		err := checkJSON([]byte(tc.doc), "doc")
		if (err == nil) != tc.ok || (err != nil && !strings.Contains(err.Error(), tc.msg)) {
			t.Errorf("checkJSON(%.40s) = %v, want ok=%v %q", tc.doc, err, tc.ok, tc.msg)
		}
		if werr := walkJSON([]byte(tc.doc), "doc"); (werr == nil) != (err == nil) {
			t.Errorf("%.40s: walk says %v, check says %v", tc.doc, werr, err)
		}
	}
	// Every published example, and every fuzz seed, gets the walk's answer.
	var docs [][]byte
	filepath.WalkDir("testdata", func(path string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() && strings.HasSuffix(path, ".json") {
			if b, err := os.ReadFile(path); err == nil {
				docs = append(docs, b)
			}
		}
		return nil
	})
	if len(docs) < 30 {
		t.Fatalf("only %d fixtures read", len(docs))
	}
	for _, d := range docs {
		if (checkJSON(d, "doc") == nil) != (walkJSON(d, "doc") == nil) {
			t.Errorf("quick and walk disagree on a fixture starting %.60q", d)
		}
	}
}

func FuzzCheckJSON(f *testing.F) {
	f.Add([]byte(`{"a":1,"A":2}`))
	f.Add([]byte(`{"resourceType":"Bundle","entry":[{"resource":{"id":"x","ID":"y"}}]}`))
	f.Add([]byte(`[{"\u0041":1,"a":2}]`))
	f.Fuzz(func(t *testing.T, doc []byte) {
		if bytes.Count(doc, []byte("[")) > 5000 {
			return
		}
		quick, walk := checkJSON(doc, "doc"), walkJSON(doc, "doc")
		if (quick == nil) != (walk == nil) {
			t.Fatalf("checkJSON %v, walk %v", quick, walk)
		}
	})
}

func BenchmarkCheckJSON(b *testing.B) {
	doc, err := os.ReadFile("testdata/carin-bb-2.0.0/ExplanationOfBenefit-EOBInpatient1.json")
	if err != nil {
		b.Fatal(err)
	}
	b.Run("quick", func(b *testing.B) {
		for b.Loop() {
			if err := checkJSON(doc, "eob"); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("walk", func(b *testing.B) {
		for b.Loop() {
			if err := walkJSON(doc, "eob"); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// FuzzReadHead holds readHead to json.Unmarshal on whatever checkJSON
// passes: the same head, or an error from both.
func FuzzReadHead(f *testing.F) {
	for _, name := range eobFixtures {
		f.Add(mustRead(f, name))
	}
	for _, s := range []string{
		`{"resourceType":"Patient","id":"p","meta":{"versionId":"2","profile":["a"]}}`,
		`{"resourceType":"Patient","ID":"q","id":"p"}`,
		`{"reſourceType":"Patient"}`,
		`{"resourceType":"Pat\u0069ent","id":null,"meta":null}`,
		`{"resourceType":5}`,
		`{"meta":{"versionId":1}}`,
		`{"id":"a","id":"b","meta":{"versionId":"1"},"meta":{"profile":["x"]}}`,
		` { "a" : [ 1 , { "b" : "}" } ] , "id" : "x" } `,
		"{\"id\":\"\xff\"}",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, doc []byte) {
		if checkJSON(doc, "doc") != nil {
			return
		}
		got, err := readHead(doc)
		var want resourceHead
		werr := json.Unmarshal(doc, &want)
		if (err == nil) != (werr == nil) {
			t.Fatalf("readHead error %v, json.Unmarshal error %v", err, werr)
		}
		if err == nil && !reflect.DeepEqual(got, want) {
			t.Fatalf("readHead %+v, json.Unmarshal %+v", got, want)
		}
	})
}

// FuzzScanBundle holds scanBundle to decodeBundleAtOnce on whatever
// checkJSON passes: where the walk answers, the envelope and entries are
// the ones json.Unmarshal reads.
func FuzzScanBundle(f *testing.F) {
	for _, s := range []string{
		`{"resourceType":"Bundle","type":"history","meta":{"profile":["p|1"]},"entry":[{"fullUrl":"urn:uuid:1","resource":{"resourceType":"Patient"},"request":{"method":"POST"},"response":null}]}`,
		`{"resourceType":"Bundle","entry":null}`,
		`{"resourceType":"Bundle","entry":[]}`,
		`{"resourceType":"Bundle","entry":[null]}`,
		`{"resourceType":"Bundle","Entry":[{"resource":{}}],"entry":[]}`,
		`{"resourceType":"Bundle","entry":[{"resource":"x"}]}`,
		`{"resourceType":"Bundle","entry":[{"fullUrl":"a","fullUrl":"b"}]}`,
		` { "resourceType" : "Bundle" , "entry" : [ { "resource" : { "a" : [ "]" ] } } ] } `,
		`{"resourceType":"Bundle","type":"h\u0069story","entry":[{"fullUrl":"urn:uuid:\u00e9"}]}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		if checkJSON(body, "body") != nil {
			return
		}
		env, entries, ok := scanBundle(body)
		wenv, wentries, wok := decodeBundleAtOnce(body)
		if ok && !wok {
			t.Fatalf("scanBundle read what decodeBundleAtOnce refuses")
		}
		if ok && (!reflect.DeepEqual(env, wenv) || !reflect.DeepEqual(entries, wentries)) {
			t.Fatalf("scanBundle %+v %+v\ndecodeBundleAtOnce %+v %+v", env, entries, wenv, wentries)
		}
	})
}

// The walk takes the published notification Bundles, not only the
// fallback: otherwise it would be dead code that its fuzz test cannot see.
func TestScanBundleReadsPublishedNotifications(t *testing.T) {
	n := 0
	for _, name := range fixtureFiles(t) {
		if !strings.HasPrefix(name, "subscriptions-backport-ig/") {
			continue
		}
		body := mustRead(t, name)
		if _, _, ok := decodeBundleAtOnce(body); !ok {
			continue
		}
		n++
		if _, _, ok := scanBundle(body); !ok {
			t.Errorf("%s: scanBundle fell back", name)
		}
	}
	if n == 0 {
		t.Fatal("no Backport notification fixtures")
	}
}

// CheckResource refuses what a notification body may not hold, and an
// event's EOBFacts checks an unguarded focus but trusts a guarded one.
func TestCheckResourceAndGuardedFocus(t *testing.T) {
	dup := json.RawMessage(`{"resourceType":"ExplanationOfBenefit","id":"a","id":"b"}`)
	deep := json.RawMessage(`{"resourceType":"ExplanationOfBenefit","x":` + strings.Repeat("[", MaxDepth+1) + strings.Repeat("]", MaxDepth+1) + `}`)
	for name, raw := range map[string]json.RawMessage{"duplicate key": dup, "too deep": deep, "not JSON": json.RawMessage(`{"a":`)} {
		if err := CheckResource(raw); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: CheckResource = %v, want ErrMalformed", name, err)
		}
	}
	if err := CheckResource(json.RawMessage(`{"resourceType":"Patient","id":"p"}`)); err != nil {
		t.Errorf("CheckResource on a plain resource: %v", err)
	}
	if _, err := (Event{Focus: dup}).EOBFacts(); !errors.Is(err, ErrMalformed) {
		t.Errorf("EOBFacts on an unguarded focus with a duplicate key = %v, want ErrMalformed", err)
	}
	if _, err := (Event{Focus: dup, Guarded: true}).EOBFacts(); errors.Is(err, ErrMalformed) {
		t.Errorf("EOBFacts checked a guarded focus again: %v", err)
	}
}
