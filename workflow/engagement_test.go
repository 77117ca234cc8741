package workflow

import (
	"slices"
	"testing"
)

// A marketing workflow saves; tracking needs an email send step to track.
func TestValidateMarketingAndTracking(t *testing.T) {
	for _, c := range []struct {
		name, def string
		want      []Problem
	}{
		{"marketing, tracked", `{"id": "survey", "purpose": "marketing", "tracking": true, "trigger": {"event": "appointment.fulfilled"},
			"steps": [{"id": "ask", "type": "send", "channel": "email", "template": "t.one"}, {"id": "done", "type": "end"}]}`, nil},
		{"tracked, sms only", `{"id": "nudge", "tracking": true, "trigger": {"event": "appointment.fulfilled"},
			"steps": [{"id": "ask", "type": "send", "channel": "sms", "template": "t.one"}, {"id": "done", "type": "end"}]}`,
			[]Problem{{"", "tracking", "needs an email send step (opens and clicks are tracked in mail only)"}}},
	} {
		t.Run(c.name, func(t *testing.T) {
			d, err := Parse([]byte(c.def))
			if err != nil {
				t.Fatal(err)
			}
			if got := Validate(d, testRegistry()); !slices.Equal(got, c.want) {
				t.Fatalf("problems %v, want %v", got, c.want)
			}
		})
	}
	if !OffersUnsubscribe(PurposeMarketing) || OffersUnsubscribe("treatment") || OffersUnsubscribe("") {
		t.Fatal("only marketing workflows offer unsubscribe")
	}
}
