# Tests for notice.rego. Run with `opa test rego/` or `go test ./policy/`.
# Every rule has at least one case it allows and one it denies, and denied
# cases check the exact reasons a compliance reviewer would read.
package tidings.notice_test

import data.tidings.notice

# A complete EOB email notice that every rule allows.
eob_email := {
	"notice_type": "eob",
	"channel": {"type": "email", "tls_enforced": true, "message_encrypted": false},
	"payload": {
		"payer_name": "Example Health Plan",
		"service_date": "2024-03-01",
		"provider_name": "Example Clinic",
		"patient_share": 45.2,
		"portal_url": "https://portal.example.org/eob/1",
	},
	"purpose": "payment",
}

allowed := {"allow": true, "deny": [], "redact": [], "obligations": {}}

denied(reasons) := {"allow": false, "deny": reasons, "redact": [], "obligations": {}}

# with_field returns obj with key set to value. (object.union would merge
# nested objects instead of replacing them.)
with_field(obj, key, value) := object.union(object.remove(obj, [key]), {key: value})

# --- the decision document ---------------------------------------------------

test_complete_eob_email_notice_is_allowed if {
	notice.decision == allowed with input as eob_email
}

test_no_input_at_all_is_denied if {
	notice.decision == denied([
		"field \"portal_url\" is required",
		"input has no channel.type",
		"input has no notice_type",
		"input has no payload object",
	])
}

test_purpose_is_optional if {
	notice.decision == allowed with input as object.remove(eob_email, ["purpose"])
}

# --- default deny: input shape ---------------------------------------------

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
	# Without a channel nothing proves it is protected, so the PHI rule fires too.
	notice.decision == denied([
		"input has no channel.type",
		"the channel is neither TLS-enforced nor message-encrypted, so the payload may not carry PHI fields: patient_share, payer_name, provider_name, service_date",
	]) with input as object.remove(eob_email, ["channel"])
}

test_channel_without_type_is_denied if {
	notice.decision == denied(["input has no channel.type"]) with input as with_field(eob_email, "channel", {"tls_enforced": true})
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
	]) with input as with_field(eob_email, "payload", ["portal_url"])
}

# --- rule 1: minimum necessary -----------------------------------------------

test_every_allow_listed_field_is_allowed if {
	every field in data.data.allowlist.eob.email {
		field in object.keys(eob_email.payload)
	}
	notice.decision.allow with input as eob_email
}

test_field_outside_the_allowlist_is_denied if {
	req := with_field(eob_email, "payload", object.union(eob_email.payload, {"diagnosis": "E11.9"}))
	notice.decision == denied(["field \"diagnosis\" is not allowed in a eob notice on email"]) with input as req
}

test_each_field_outside_the_allowlist_is_named_in_sorted_order if {
	extra := {"member_id": "M-1", "diagnosis": "E11.9", "billed_amount": 300}
	req := with_field(eob_email, "payload", object.union(eob_email.payload, extra))
	notice.decision == denied([
		"field \"billed_amount\" is not allowed in a eob notice on email",
		"field \"diagnosis\" is not allowed in a eob notice on email",
		"field \"member_id\" is not allowed in a eob notice on email",
	]) with input as req
}

test_a_notice_with_fewer_fields_than_allowed_is_allowed if {
	req := with_field(eob_email, "payload", {"payer_name": "Example Health Plan", "portal_url": "https://portal.example.org/eob/1"})
	notice.decision == allowed with input as req
}

test_unknown_notice_type_is_denied if {
	notice.decision == denied(["notice type \"lab_result\" is not known"]) with input as with_field(eob_email, "notice_type", "lab_result")
}

test_unknown_channel_is_denied if {
	req := with_field(eob_email, "channel", {"type": "sms", "tls_enforced": true})
	notice.decision == denied(["channel \"sms\" is not allowed for a eob notice"]) with input as req
}

test_allowlist_is_read_from_data if {
	# Adding a field to the allowlist data is all it takes to allow it.
	req := with_field(eob_email, "payload", object.union(eob_email.payload, {"claim_status": "paid"}))
	not notice.decision.allow with input as req
	more := array.concat(data.data.allowlist.eob.email, ["claim_status"])
	notice.decision == allowed with input as req with data.data.allowlist.eob.email as more
}

# --- rule 2: channel security ------------------------------------------------

test_phi_on_tls_enforced_channel_is_allowed if {
	notice.decision == allowed with input as eob_email
}

test_phi_on_encrypted_message_without_tls_is_allowed if {
	req := with_field(eob_email, "channel", {"type": "email", "tls_enforced": false, "message_encrypted": true})
	notice.decision == allowed with input as req
}

test_phi_on_unprotected_channel_is_denied if {
	req := with_field(eob_email, "channel", {"type": "email", "tls_enforced": false, "message_encrypted": false})
	notice.decision == denied(["the channel is neither TLS-enforced nor message-encrypted, so the payload may not carry PHI fields: patient_share, payer_name, provider_name, service_date"]) with input as req
}

test_unprotected_channel_without_security_flags_is_denied if {
	req := with_field(eob_email, "channel", {"type": "email"})
	notice.decision == denied(["the channel is neither TLS-enforced nor message-encrypted, so the payload may not carry PHI fields: patient_share, payer_name, provider_name, service_date"]) with input as req
}

test_only_boolean_true_counts_as_protected if {
	req := with_field(eob_email, "channel", {"type": "email", "tls_enforced": "true", "message_encrypted": 1})
	not notice.decision.allow with input as req
}

test_portal_link_alone_on_unprotected_channel_is_allowed if {
	req := {
		"notice_type": "eob",
		"channel": {"type": "email", "tls_enforced": false, "message_encrypted": false},
		"payload": {"portal_url": "https://portal.example.org/eob/1"},
	}
	notice.decision == allowed with input as req
}

test_fields_outside_the_allowlist_count_as_phi if {
	req := {
		"notice_type": "eob",
		"channel": {"type": "email", "tls_enforced": false, "message_encrypted": false},
		"payload": {"portal_url": "https://portal.example.org/eob/1", "diagnosis": "E11.9"},
	}
	notice.decision == denied([
		"field \"diagnosis\" is not allowed in a eob notice on email",
		"the channel is neither TLS-enforced nor message-encrypted, so the payload may not carry PHI fields: diagnosis",
	]) with input as req
}

test_non_phi_list_is_read_from_data if {
	req := {
		"notice_type": "eob",
		"channel": {"type": "email", "tls_enforced": false, "message_encrypted": false},
		"payload": {"portal_url": "https://portal.example.org/eob/1", "payer_name": "Example Health Plan"},
	}
	not notice.decision.allow with input as req
	notice.decision == allowed with input as req with data.data.non_phi_fields as ["portal_url", "payer_name"]
}

# --- rule 3: portal_url is required ------------------------------------------

test_missing_portal_url_is_denied if {
	req := with_field(eob_email, "payload", object.remove(eob_email.payload, ["portal_url"]))
	notice.decision == denied(["field \"portal_url\" is required"]) with input as req
}

test_empty_portal_url_is_denied if {
	req := with_field(eob_email, "payload", object.union(eob_email.payload, {"portal_url": "  "}))
	notice.decision == denied(["field \"portal_url\" must be a non-empty string"]) with input as req
}

test_null_portal_url_is_denied if {
	req := with_field(eob_email, "payload", object.union(eob_email.payload, {"portal_url": null}))
	notice.decision == denied(["field \"portal_url\" must be a non-empty string"]) with input as req
}

test_reasons_never_carry_field_values if {
	unprotected := with_field(eob_email, "channel", {"type": "email"})
	req := with_field(unprotected, "payload", object.union(eob_email.payload, {"diagnosis": "CANARY-VALUE"}))
	reasons := notice.decision.deny with input as req
	count(reasons) == 2
	every reason in reasons {
		not contains(reason, "CANARY-VALUE")
		not contains(reason, "Example Health Plan")
	}
}

# --- rule 4: what an EOB notice is for ------------------------------------------

test_claim_eob_is_allowed if {
	notice.decision == allowed with input as with_field(eob_email, "facts", {"use": "claim", "outcome": "complete"})
}

test_eob_without_facts_is_judged_on_payload_alone if {
	notice.decision == allowed with input as eob_email
}

test_preauthorization_is_not_notified_by_default if {
	notice.decision == denied(["an EOB with use \"preauthorization\" is not notified (settings.eob.notify_use lists claim)"]) with input as with_field(eob_email, "facts", {"use": "preauthorization", "outcome": "queued"})
}

test_preauthorization_is_notified_when_settings_allow_it if {
	notice.decision == allowed with input as with_field(eob_email, "facts", {"use": "preauthorization"})
		with data.data.settings.eob.notify_use as ["claim", "preauthorization"]
}

test_error_outcome_is_not_notified_by_default if {
	notice.decision == denied(["an EOB whose outcome is \"error\" is not notified (settings.eob.notify_error_outcome is false)"]) with input as with_field(eob_email, "facts", {"use": "claim", "outcome": "error"})
}

test_error_outcome_is_notified_when_settings_allow_it if {
	notice.decision == allowed with input as with_field(eob_email, "facts", {"use": "claim", "outcome": "error"})
		with data.data.settings.eob.notify_error_outcome as true
}
