package policy

import (
	"context"
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"testing/fstest"

	"github.com/open-policy-agent/opa/v1/ast"
)

// TestShippedPolicySpecialises keeps the fast path fast: the shipped
// policies specialise for every notice type and channel the worker and the
// portal ask about, and Decide then decides with the specialised query.
func TestShippedPolicySpecialises(t *testing.T) {
	e := mustEngine(t)
	rev := e.active.Load()
	for _, key := range []specKey{
		{"eob", "email", ""},
		{"eob", "email", ChannelMessageEncrypted},
		{"eob", "portal", ChannelPortalAuthenticated},
		{"eob", "sms", ""},
		{"appointment", "email", ""},
		{"appointment", "sms", ""},
		{"appointment", "portal", ChannelPortalAuthenticated},
	} {
		if _, err := prepareSpecialised(context.Background(), rev.special.files, key); err != nil {
			t.Errorf("%+v: %v", key, err)
		}
	}
	in := realisticEOB()
	if _, err := e.Decide(context.Background(), in); err != nil {
		t.Fatal(err)
	}
	entry := rev.special.byKey[specKey{"eob", "email", ""}]
	if entry == nil || entry.query == nil {
		t.Fatalf("Decide(%s on %s) left no specialised query: %+v", in.NoticeType, in.Channel.Type, rev.special.byKey)
	}
	v, err := in.regoValue()
	if err != nil {
		t.Fatal(err)
	}
	if q := rev.queryFor(context.Background(), v); q != entry.query {
		t.Fatal("queryFor does not pick the specialised query")
	}
}

// TestSpecKeyOfTakesOnlyTheInputShape: an input with a key the specialised
// query assumed absent, or a notice or channel type that is not a string,
// goes to the general query.
func TestSpecKeyOfTakesOnlyTheInputShape(t *testing.T) {
	for raw, want := range map[string]bool{
		`{"notice_type":"eob","channel":{"type":"email","tls_enforced":true},"payload":{},"contact":{}}`:   true,
		`{"notice_type":"eob","channel":{"type":"portal","security":"portal-authenticated"},"payload":{}}`: true,
		`{"notice_type":"eob","channel":{"type":"email"},"payload":{},"extra":1}`:                          false,
		`{"notice_type":"eob","channel":{"type":"email","colour":"red"}}`:                                  false,
		`{"notice_type":"eob","channel":{"type":"email","security":7}}`:                                    false,
		`{"notice_type":7,"channel":{"type":"email"}}`:                                                     false,
		`{"notice_type":"eob","channel":"email"}`:                                                          false,
		`{"notice_type":"eob"}`: false,
	} {
		v, err := parseInput(json.RawMessage(raw))
		if err != nil {
			t.Fatalf("%s: %v", raw, err)
		}
		if _, got := specKeyOf(v); got != want {
			t.Errorf("specKeyOf(%s) = %v, want %v", raw, got, want)
		}
	}
	if _, ok := specKeyOf(ast.NewArray()); ok {
		t.Error("specKeyOf(an array) has a key")
	}
	// Input.regoValue always builds the shape.
	in := realisticEOBFull()
	in.Channel.Security = ChannelMessageEncrypted
	v, err := in.regoValue()
	if err != nil {
		t.Fatal(err)
	}
	if key, ok := specKeyOf(v); !ok || key != (specKey{"eob", "email", ChannelMessageEncrypted}) {
		t.Errorf("specKeyOf(realisticEOBFull) = %+v, %v", key, ok)
	}
}

// TestModulesThatReadTheWholeInputAreNotSpecialised: partial evaluation
// with part of input.channel known would see the rest of it as absent, so
// a policy that reads input or input.channel whole is decided by the
// general query only, and still decides right.
func TestModulesThatReadTheWholeInputAreNotSpecialised(t *testing.T) {
	for src, want := range map[string]bool{
		`p if input.notice_type == "eob"`:                true,
		`p if input.channel.type == "email"`:             true,
		`p if { some k; input.payload[k] }`:              true,
		`p if input.payload[input.notice_type]`:          true,
		`p if count(input.channel) > 1`:                  false,
		`p if { some k, _ in input.channel; k == "x" }`:  false,
		`p if input.channel[input.notice_type]`:          false,
		`p if { some k; input[k] }`:                      false,
		`p if { x := input; x.notice_type }`:             false,
		`p if input.payload[object.keys(input)[_]]`:      false,
		`p if data.q with input as {}`:                   false,
		"import input.channel\np if channel.type":        false,
		"import input.channel as ch\np if count(ch) > 1": false,
		`p if walk(input, [_, "x"])`:                     false,
	} {
		if !strings.HasPrefix(src, "package ") {
			src = "package t\n" + src
		}
		m, err := ast.ParseModuleWithOpts("m.rego", src, ast.ParserOptions{RegoVersion: ast.RegoV1})
		if err != nil {
			t.Fatalf("%s: %v", src, err)
		}
		if got := specialisable(m); got != want {
			t.Errorf("specialisable(%q) = %v, want %v", src, got, want)
		}
	}

	// A policy that counts the channel's keys: with the key known and the
	// flags unknown, a specialised query could count one key where the
	// input has four.
	fsys := fstest.MapFS{"p.rego": &fstest.MapFile{Data: []byte(`package tidings.notice

decision := {"allow": allow, "deny": deny, "redact": [], "obligations": {}}

allow := count(input.channel) == 4

deny := [] if allow
deny := ["the channel has other than four keys"] if not allow
`)}}
	e, err := New(context.Background(), fsys)
	if err != nil {
		t.Fatal(err)
	}
	d, err := e.Decide(context.Background(), realisticEOB())
	if err != nil || !d.Allow {
		t.Fatalf("Decide = %+v, %v; want allowed", d, err)
	}
	rev := e.active.Load()
	if entry := rev.special.byKey[specKey{"eob", "email", ""}]; entry == nil || entry.query != nil {
		t.Errorf("a policy that reads input.channel whole was specialised: %+v", entry)
	}
}

// TestSpecialisedDecisionsMatchTheGeneralQuery decides every partial seed
// that has a key with the engine's own path and with the policies as written.
func TestSpecialisedDecisionsMatchTheGeneralQuery(t *testing.T) {
	ctx := context.Background()
	for name, rev := range partialRevisions(t) {
		n := 0
		for _, s := range partialSeeds {
			input, err := parseInput(json.RawMessage(s))
			if err != nil {
				t.Fatal(err)
			}
			key, ok := specKeyOf(input)
			if !ok {
				continue
			}
			n++
			q := rev.special.query(ctx, key)
			if q == nil {
				t.Errorf("%s: seed %s: no query specialised to %+v", name, s, key)
				continue
			}
			want, wantErr := rev.decide(ctx, &rev.query, input)
			got, gotErr := rev.decide(ctx, q, input)
			if (wantErr == nil) != (gotErr == nil) || !reflect.DeepEqual(got, want) {
				t.Errorf("%s: seed %s: specialised %+v, %v; as written %+v, %v", name, s, got, gotErr, want, wantErr)
			}
		}
		if n < 15 {
			t.Errorf("%s: only %d seeds have a key", name, n)
		}
		built := 0
		for _, e := range rev.special.byKey {
			if e.query != nil {
				built++
			}
		}
		if built < 6 {
			t.Errorf("%s: the seeds specialised %d keys, want at least 6", name, built)
		}
	}
}
