# Tests for notice.rego: the decision document and the input shape (rule 0).
# Each rule has its own file beside this one (minimum_necessary_test.rego,
# channel_security_test.rego, sensitive_test.rego, patient_rights_test.rego,
# eob_use_test.rego); all share the sample notices and helpers defined here.
# Run with `opa test rego/` or `go test ./policy/ -run TestRegoTests`.
#
# Every rule has at least one case it allows and one it denies, and denied
# cases check the exact reasons a compliance reviewer would read.
package tidings.notice_test

import data.tidings.notice

# A complete EOB email notice that every rule allows.
eob_email := {
	"notice_type": "eob",
	"channel": {"type": "email", "tls_enforced": true, "message_encrypted": false, "encryption_available": false},
	"payload": {
		"payer_name": "Example Health Plan",
		"service_date": "2024-03-01",
		"provider_name": "Example Clinic",
		"patient_share": 45.2,
		"portal_url": "https://portal.example.org/eob/1",
	},
	"purpose": "payment",
	"facts": {"use": "claim", "outcome": "complete", "sensitive_categories": [], "has_sensitive_diagnosis": false, "minor": false},
	"contact": {"opted_out_channels": [], "has_confidential_address": false, "restrictions": [], "marketing_authorized": false, "language": "en"},
}

# The PHI fields of eob_email, sorted as the decision lists them.
eob_phi := ["patient_share", "payer_name", "provider_name", "service_date"]

# A complete appointment email notice that every rule allows.
appointment_email := {
	"notice_type": "appointment",
	"channel": {"type": "email", "tls_enforced": true, "message_encrypted": false, "encryption_available": false},
	"payload": {
		"appointment_date": "2024-04-02",
		"appointment_time": "09:30",
		"location_name": "Example Clinic, Main Street",
		"provider_name": "Dr. Example",
		"portal_url": "https://portal.example.org/appointment/1",
	},
	"purpose": "treatment",
}

appointment_phi := ["appointment_date", "appointment_time", "location_name", "provider_name"]

portal_link := {"portal_url": "https://portal.example.org/eob/1"}

no_obligations := {
	"portal_only": false,
	"requires_message_encryption": false,
	"generic_provider_label": false,
	"route_to_confidential_address": false,
}

# obligations(names) is the obligations object with exactly names set to true.
obligations(names) := object.union(no_obligations, {name: true | some name in names})

allowed := {"allow": true, "deny": [], "redact": [], "obligations": no_obligations}

allowed_with(redact, names) := {"allow": true, "deny": [], "redact": redact, "obligations": obligations(names)}

denied(reasons) := {"allow": false, "deny": reasons, "redact": [], "obligations": no_obligations}

denied_with(reasons, redact, names) := {"allow": false, "deny": reasons, "redact": redact, "obligations": obligations(names)}

# with_field returns obj with key set to value. (object.union would merge
# nested objects instead of replacing them.)
with_field(obj, key, value) := object.union(object.remove(obj, [key]), {key: value})

with_channel(req, channel) := with_field(req, "channel", channel)

with_payload(req, payload) := with_field(req, "payload", payload)

# with_extra_fields adds fields to req's payload.
with_extra_fields(req, fields) := with_payload(req, object.union(req.payload, fields))

with_facts(req, facts) := with_field(req, "facts", facts)

with_contact(req, contact) := with_field(req, "contact", contact)

unprotected_email := {"type": "email", "tls_enforced": false, "message_encrypted": false, "encryption_available": false}

# --- the decision document ---------------------------------------------------

test_complete_eob_email_notice_is_allowed if {
	notice.decision == allowed with input as eob_email
}

test_complete_appointment_email_notice_is_allowed if {
	notice.decision == allowed with input as appointment_email
}

test_minimal_input_is_allowed if {
	# purpose, facts and contact are optional; absent, no rule fires on them.
	req := object.remove(eob_email, ["purpose", "facts", "contact"])
	notice.decision == allowed with input as req
}

test_no_input_at_all_is_denied if {
	notice.decision == denied([
		"field \"portal_url\" is required",
		"input has no channel.type",
		"input has no notice_type",
		"input has no payload object",
	])
}

test_every_obligation_is_always_present if {
	names := {"portal_only", "requires_message_encryption", "generic_provider_label", "route_to_confidential_address"}
	object.keys(notice.decision.obligations) == names
	object.keys(notice.decision.obligations) == names with input as eob_email
	every value in notice.decision.obligations {
		is_boolean(value)
	}
}

test_allow_is_true_exactly_when_nothing_denies if {
	notice.decision.allow with input as eob_email
	not notice.decision.allow with input as with_field(eob_email, "notice_type", "lab_result")
}

# --- rule 0: input shape -----------------------------------------------------

test_missing_notice_type_is_denied if {
	notice.decision == denied(["input has no notice_type"]) with input as object.remove(eob_email, ["notice_type"])
}

test_empty_notice_type_is_denied if {
	notice.decision == denied(["input has no notice_type"]) with input as with_field(eob_email, "notice_type", "")
}

test_non_string_notice_type_is_denied if {
	notice.decision == denied(["input has no notice_type"]) with input as with_field(eob_email, "notice_type", 7)
}

test_missing_channel_is_denied if {
	# Without a channel nothing proves it protects PHI, so rule 2 also asks
	# for portal-only; the denial decides.
	notice.decision == denied_with(["input has no channel.type"], eob_phi, ["portal_only"]) with input as object.remove(eob_email, ["channel"])
}

test_channel_without_type_is_denied if {
	req := with_channel(eob_email, {"tls_enforced": true})
	notice.decision == denied_with(["input has no channel.type"], eob_phi, ["portal_only"]) with input as req
}

test_unknown_channel_type_is_denied if {
	req := with_channel(eob_email, {"type": "fax", "tls_enforced": true, "message_encrypted": false, "encryption_available": false})
	notice.decision == denied_with(["channel type \"fax\" is not known"], eob_phi, ["portal_only"]) with input as req
}

test_known_channels_are_read_from_data if {
	req := with_payload(with_channel(eob_email, {"type": "fax"}), portal_link)
	notice.decision == denied(["channel type \"fax\" is not known"]) with input as req
	notice.decision == denied_with(["channel \"fax\" is not allowed for a eob notice"], [], ["portal_only"]) with input as req
		with data.data.channels.fax as {"may_carry_phi": false}
}

test_missing_payload_is_denied if {
	notice.decision == denied([
		"field \"portal_url\" is required",
		"input has no payload object",
	]) with input as object.remove(eob_email, ["payload"])
}

test_payload_that_is_not_an_object_is_denied if {
	notice.decision == denied([
		"field \"portal_url\" is required",
		"input has no payload object",
	]) with input as with_payload(eob_email, ["portal_url"])
}

test_reasons_never_carry_field_values if {
	req := {
		"notice_type": "eob",
		"channel": {"type": "email"},
		"payload": object.union(eob_email.payload, {"diagnosis": "CANARY-VALUE"}),
		"purpose": "marketing",
		"facts": {"use": "preauthorization", "outcome": "error", "sensitive_categories": ["mental_health"]},
		"contact": {"opted_out_channels": ["email"], "restrictions": ["all"], "language": "CANARY-LANGUAGE"},
	}
	reasons := notice.decision.deny with input as req
	count(reasons) == 6
	every reason in reasons {
		not contains(reason, "CANARY")
		not contains(reason, "Example")
		not contains(reason, "mental_health")
	}
}
