package delivery

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/tidings-health/tidings/notify"
	"github.com/tidings-health/tidings/policy"
)

// shippedPolicy decides with the built-in rules for every tenant.
type shippedPolicy struct{ e *policy.Engine }

func (p shippedPolicy) Decide(ctx context.Context, _ string, in policy.Input) (policy.Decision, error) {
	return p.e.Decide(ctx, in)
}

// The portal's view is decided with the shipped rules on the authenticated
// portal, from a copy of the draft the email's decision has not changed: a
// sensitive notice that goes portal-only by email still shows on the
// portal, without its provider; a patient who opted out of the portal
// gets no payload there.
func TestPortalDecisionWithTheShippedRules(t *testing.T) {
	ctx := context.Background()
	e, err := policy.NewEmbedded(ctx)
	if err != nil {
		t.Fatal(err)
	}
	s := &Service{Policy: shippedPolicy{e}}
	plain := policy.Input{NoticeType: notify.NoticeTypeEOB, Purpose: "payment", Facts: map[string]any{"use": "claim", "outcome": "complete"}}
	sensitive := policy.Input{NoticeType: notify.NoticeTypeEOB, Purpose: "payment",
		Facts: map[string]any{"use": "claim", "outcome": "complete", "sensitive_categories": []string{"mental_health"}, "has_sensitive_diagnosis": true}}
	optedOut := home
	optedOut.OptedOutChannels = []string{"portal"}
	for name, tc := range map[string]struct {
		base          policy.Input
		contact       Contact
		emailPortal   bool // the email goes portal-only
		want, notWant []string
	}{
		"plain":               {base: plain, contact: home, want: []string{"Acme Health", "Oncology Partners", "$45.20"}},
		"sensitive":           {base: sensitive, contact: home, emailPortal: true, want: []string{"Acme Health", "$45.20"}, notWant: []string{"Oncology"}},
		"opted out of portal": {base: plain, contact: optedOut, notWant: []string{"Acme"}},
	} {
		t.Run(name, func(t *testing.T) {
			d := eob()
			pd := d.Clone()
			p, _, err := s.decision(ctx, "t1", tc.contact, tc.base, d, out, notify.Security{TLSEnforced: true})
			if err != nil || p.Status != "" || p.PortalOnly != tc.emailPortal {
				t.Fatalf("email plan %+v, %v", p, err)
			}
			raw, rec, err := s.portalDecision(ctx, "t1", tc.contact, tc.base, pd, out, "confidential@example.org", PortalView{NoticeType: "eob", Patient: "Patient/7"})
			if err != nil || rec == nil || rec.Channel != ChannelPortal {
				t.Fatalf("portal decision: %+v %v", rec, err)
			}
			var v PortalView
			if err := json.Unmarshal(raw, &v); err != nil {
				t.Fatal(err)
			}
			if v.Email != "confidential@example.org" || v.Patient != "Patient/7" || v.Language != "en" {
				t.Errorf("view %+v", v)
			}
			for _, w := range tc.want {
				if !strings.Contains(string(v.Payload), w) {
					t.Errorf("the portal does not show %q: %s", w, v.Payload)
				}
			}
			for _, w := range tc.notWant {
				if strings.Contains(string(v.Payload), w) {
					t.Errorf("the portal shows %q: %s", w, v.Payload)
				}
			}
			if len(tc.want) == 0 && (v.Payload != nil || len(v.Reasons) == 0) {
				t.Errorf("nothing should show, with a reason: %+v", v)
			}
		})
	}
}
