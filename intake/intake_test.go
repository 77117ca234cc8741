package intake

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/tidings-health/tidings/fhir"
)

func TestDedupeKey(t *testing.T) {
	compact := json.RawMessage(`{"resourceType":"ExplanationOfBenefit","id":"x","total":[{"amount":{"value":45.20}}]}`)
	pretty := json.RawMessage("{\n  \"id\": \"x\",\n  \"resourceType\": \"ExplanationOfBenefit\",\n  \"total\": [ { \"amount\": { \"value\": 45.20 } } ]\n}")
	changed := json.RawMessage(`{"resourceType":"ExplanationOfBenefit","id":"x","total":[{"amount":{"value":45.21}}]}`)
	ev := func(version string, focus json.RawMessage) fhir.Event {
		return fhir.Event{ResourceType: "ExplanationOfBenefit", ID: "x", VersionID: version, Focus: focus}
	}
	if got := DedupeKey("sub", ev("3", compact)); got != "sub|ExplanationOfBenefit|x|v:3" {
		t.Errorf("versioned key = %q", got)
	}
	if DedupeKey("sub", ev("3", compact)) != DedupeKey("sub", ev("3", changed)) {
		t.Error("with a versionId the key must not depend on the body")
	}
	if DedupeKey("sub", ev("", compact)) != DedupeKey("sub", ev("", pretty)) {
		t.Error("the same resource formatted differently must dedupe")
	}
	if DedupeKey("sub", ev("", compact)) == DedupeKey("sub", ev("", changed)) {
		t.Error("a changed resource without versionId must be a new event")
	}
	if DedupeKey("a", ev("1", compact)) == DedupeKey("b", ev("1", compact)) {
		t.Error("subscriptions must not share keys")
	}
	if k := DedupeKey("sub", ev("", compact)); !strings.Contains(k, "|h:") || strings.Contains(k, "45.2") {
		t.Errorf("hash key %q must hold a hash, not content", k)
	}
}
