package fhir

import "testing"

func TestSumMoney(t *testing.T) {
	tests := []struct {
		in   []string
		want string
		ok   bool
	}{
		{[]string{"45.20"}, "45.20", true},
		{[]string{"0.1", "0.2"}, "0.3", true},
		{[]string{"0.01", "0.04"}, "0.05", true},
		{[]string{"-0.05", "0.01"}, "-0.04", true},
		{[]string{"10", "0.005"}, "10.005", true},
		{[]string{"1e2", "1"}, "101", true},
		{[]string{"28.104000000000003", "112.41600000000001"}, "140.520000000000013", true},
		{[]string{"1", "abc"}, "", false},
		{[]string{"1", "1e999"}, "", false},
		{[]string{"1", ".5"}, "", false},
		{nil, "", false},
	}
	for _, tc := range tests {
		var ms []Money
		for _, v := range tc.in {
			ms = append(ms, Money{Value: v, Currency: "USD"})
		}
		got, ok := sumMoney(ms)
		if ok != tc.ok || (ok && got != (Money{Value: tc.want, Currency: "USD"})) {
			t.Errorf("sumMoney(%v) = %v, %v; want %q, %v", tc.in, got, ok, tc.want, tc.ok)
		}
	}
}

func TestParseReference(t *testing.T) {
	tests := []struct {
		ref              string
		kind             refKind
		typ, id, version string
	}{
		{"Patient/p1", refRelative, "Patient", "p1", ""},
		{"Patient/p1/_history/3", refRelative, "Patient", "p1", "3"},
		{"https://x.example/fhir/ExplanationOfBenefit/e-1/_history/2", refAbsolute, "ExplanationOfBenefit", "e-1", "2"},
		{"urn:uuid:d78af07c-9cb9-4f31-9b11-c45a28f2eec8", refURN, "", "d78af07c-9cb9-4f31-9b11-c45a28f2eec8", ""},
		{"#coverage", refContained, "", "coverage", ""},
		{"Organization?identifier=https://github.com/synthetichealth/synthea|abc", refConditional, "Organization", "", ""},
		{"a/b/Patient/1", refOther, "", "", ""},
		{"patient/1", refOther, "", "", ""},
		{"Patient/has space", refOther, "", "", ""},
		{"", refOther, "", "", ""},
	}
	for _, tc := range tests {
		p := parseReference(tc.ref)
		if p.Kind != tc.kind || p.Type != tc.typ || p.ID != tc.id || p.Version != tc.version {
			t.Errorf("parseReference(%q) = %+v", tc.ref, p)
		}
	}
}
