package main

import (
	"bytes"
	"errors"
	"testing"

	"github.com/emersion/go-msgauth/dkim"
	"github.com/tidings-health/tidings/access"
)

// A health plan's notice goes out DKIM-signed with the plan's key for its
// sender domain (TIDINGS_DKIM_KEYS): notification → worker → captured mail,
// verified by go-msgauth against the published key. The key is the dev
// tenant's, so the signature also shows the notice's tenant reached the
// channel.
func TestNoticeIsDKIMSignedWithTheTenantsKey(t *testing.T) {
	pemFile, record := dkimKeyFile(t)
	ts := newTestStack(t, testOpts{NoWorkflows: true, NoPlaceholder: true, DKIMKeys: "dev:plan.example:s2026:" + pemFile})
	token := ts.apiKey(t, "dev", access.Operator)
	h, err := ts.app.handler(nil)
	if err != nil {
		t.Fatal(err)
	}
	def := `{"id": "eob-signed", "trigger": {"event": "eob.received"}, "sender": {"name": "Plan", "from": "eob@plan.example"},
		"steps": [{"id": "notice", "type": "send", "channel": "email", "template": "eob.notice"}, {"id": "done", "type": "end"}]}`
	if r := doRequest(h, "POST", "/v1/workflows", "application/json", token, def); r.Code != 201 {
		t.Fatalf("POST /v1/workflows: %d %s", r.Code, r.Body)
	}
	if r := doRequest(h, "POST", "/v1/workflows/eob-signed/activate", "", token, ""); r.Code != 200 {
		t.Fatalf("activate: %d %s", r.Code, r.Body)
	}
	ts.putContact(t, "Patient2", `{"email":"member@example.org"}`)
	msg := ts.notifyOneMail(t, "carin-bb-2.0.0/ExplanationOfBenefit-EOBPharmacy1.json")
	lookup := func(name string) ([]string, error) {
		if name == "s2026._domainkey.plan.example" {
			return []string{record}, nil
		}
		return nil, errors.New("no such record")
	}
	vs, err := dkim.VerifyWithOptions(bytes.NewReader(msg.Data), &dkim.VerifyOptions{LookupTXT: lookup})
	if err != nil {
		t.Fatal(err)
	}
	if len(vs) != 1 || vs[0].Err != nil || vs[0].Domain != "plan.example" {
		t.Fatalf("DKIM verifications %+v, want one good signature of plan.example", vs)
	}
}
