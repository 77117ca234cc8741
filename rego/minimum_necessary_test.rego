# Rule 1, minimum necessary: the payload holds only the fields
# data/allowlist.json lists for the notice type and channel, and always the
# portal link. Sample notices and helpers are in notice_test.rego.
package tidings.notice_test

import data.tidings.notice

# A notice of type nt on channel ch carrying exactly the allow-listed fields.
full_notice(nt, ch) := {
	"notice_type": nt,
	"channel": {"type": ch, "tls_enforced": true, "message_encrypted": false, "encryption_available": false},
	"payload": {field: "x" | some field in data.data.allowlist[nt][ch]},
}

test_every_allow_listed_field_is_allowed_for_every_type_and_channel if {
	every nt, by_channel in data.data.allowlist {
		every ch, _ in by_channel {
			notice.decision.deny == [] with input as full_notice(nt, ch)
		}
	}
}

test_shipped_allowlist_is_as_documented if {
	eob_fields := ["payer_name", "service_date", "provider_name", "patient_share", "portal_url"]
	appointment_fields := ["appointment_date", "appointment_time", "location_name", "provider_name", "portal_url"]
	data.data.allowlist == {
		"eob": {"email": eob_fields, "portal": eob_fields, "sms": ["portal_url"], "push": ["portal_url"]},
		"appointment": {"email": appointment_fields, "portal": appointment_fields, "sms": ["portal_url"], "push": ["portal_url"]},
	}
}

test_field_outside_the_allowlist_is_denied if {
	req := with_extra_fields(eob_email, {"diagnosis": "E11.9"})
	notice.decision == denied(["field \"diagnosis\" is not allowed in a eob notice on email"]) with input as req
}

test_each_field_outside_the_allowlist_is_named_in_sorted_order if {
	req := with_extra_fields(eob_email, {"member_id": "M-1", "diagnosis": "E11.9", "billed_amount": 300})
	notice.decision == denied([
		"field \"billed_amount\" is not allowed in a eob notice on email",
		"field \"diagnosis\" is not allowed in a eob notice on email",
		"field \"member_id\" is not allowed in a eob notice on email",
	]) with input as req
}

test_a_notice_with_fewer_fields_than_allowed_is_allowed if {
	req := with_payload(eob_email, {"payer_name": "Example Health Plan", "portal_url": "https://portal.example.org/eob/1"})
	notice.decision == allowed with input as req
}

test_an_eob_field_is_not_allowed_in_an_appointment_notice if {
	req := with_extra_fields(appointment_email, {"patient_share": 45.2})
	notice.decision == denied(["field \"patient_share\" is not allowed in a appointment notice on email"]) with input as req
}

test_appointment_on_portal_is_allowed if {
	req := with_channel(appointment_email, {"type": "portal", "tls_enforced": true, "message_encrypted": false, "encryption_available": false})
	notice.decision == allowed with input as req
}

test_unknown_notice_type_is_denied if {
	notice.decision == denied(["notice type \"lab_result\" is not known"]) with input as with_field(eob_email, "notice_type", "lab_result")
}

test_channel_missing_from_the_allowlist_is_denied if {
	req := with_payload(with_channel(eob_email, {"type": "push"}), portal_link)
	notice.decision == allowed_with([], ["portal_only"]) with input as req
	notice.decision == denied_with(["channel \"push\" is not allowed for a eob notice"], [], ["portal_only"]) with input as req
		with data.data.allowlist as json.remove(data.data.allowlist, ["eob/push"])
}

test_allowlist_is_read_from_data if {
	# Adding a field to the allowlist data is all it takes to allow it.
	req := with_extra_fields(eob_email, {"claim_status": "paid"})
	not notice.decision.allow with input as req
	more := array.concat(data.data.allowlist.eob.email, ["claim_status"])
	notice.decision == allowed with input as req with data.data.allowlist.eob.email as more
}

# --- SMS and push carry no PHI --------------------------------------------------

test_sms_with_only_the_portal_link_is_allowed if {
	# Portal-only all the same (rule 2b): an SMS never carries more.
	req := with_payload(with_channel(eob_email, {"type": "sms", "tls_enforced": false, "message_encrypted": false, "encryption_available": false}), portal_link)
	notice.decision == allowed_with([], ["portal_only"]) with input as req
}

test_push_with_only_the_portal_link_is_allowed if {
	req := with_payload(with_channel(appointment_email, {"type": "push"}), portal_link)
	notice.decision == allowed_with([], ["portal_only"]) with input as req
}

test_phi_on_sms_is_denied_even_over_tls if {
	# Rule 1 denies each PHI field; rule 2 would also redact them, since SMS
	# never counts as protected. The denial decides: nothing is sent.
	req := with_channel(eob_email, {"type": "sms", "tls_enforced": true, "message_encrypted": true, "encryption_available": true})
	notice.decision == denied_with(
		[
			"field \"patient_share\" is not allowed in a eob notice on sms",
			"field \"payer_name\" is not allowed in a eob notice on sms",
			"field \"provider_name\" is not allowed in a eob notice on sms",
			"field \"service_date\" is not allowed in a eob notice on sms",
		],
		eob_phi,
		["portal_only"],
	) with input as req
}

test_appointment_date_on_push_is_denied if {
	req := with_payload(with_channel(appointment_email, {"type": "push", "tls_enforced": true}), object.union(portal_link, {"appointment_date": "2024-04-02"}))
	notice.decision == denied_with(
		["field \"appointment_date\" is not allowed in a appointment notice on push"],
		["appointment_date"],
		["portal_only"],
	) with input as req
}

# --- the portal link is required ------------------------------------------------

test_missing_portal_url_is_denied if {
	req := with_payload(eob_email, object.remove(eob_email.payload, ["portal_url"]))
	notice.decision == denied(["field \"portal_url\" is required"]) with input as req
}

test_empty_portal_url_is_denied if {
	req := with_extra_fields(eob_email, {"portal_url": "  "})
	notice.decision == denied(["field \"portal_url\" must be a non-empty string"]) with input as req
}

test_null_portal_url_is_denied if {
	req := with_extra_fields(eob_email, {"portal_url": null})
	notice.decision == denied(["field \"portal_url\" must be a non-empty string"]) with input as req
}
