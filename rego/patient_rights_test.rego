# Rule 4, patient rights: opted-out channels, confidential-communication
# addresses, agreed restrictions and marketing authorization. Sample notices
# and helpers are in notice_test.rego.
package tidings.notice_test

import data.tidings.notice

# --- opted-out channels ------------------------------------------------------------

test_opted_out_channel_is_denied if {
	req := with_contact(eob_email, {"opted_out_channels": ["sms", "email"]})
	notice.decision == denied(["the patient opted out of email"]) with input as req
}

test_opting_out_of_another_channel_does_not_deny if {
	req := with_contact(eob_email, {"opted_out_channels": ["sms", "push"]})
	notice.decision == allowed with input as req
}

# --- suppressed after repeated permanent bounces ----------------------------------

test_suppressed_address_gets_no_email if {
	req := with_contact(eob_email, {"email_suppressed": true})
	notice.decision == denied(["the patient's email address is suppressed after repeated permanent bounces"]) with input as req
}

test_wrongly_typed_suppression_flag_still_suppresses if {
	req := with_contact(eob_email, {"email_suppressed": "yes"})
	notice.decision == denied(["the patient's email address is suppressed after repeated permanent bounces"]) with input as req
}

test_unsuppressed_or_absent_flag_allows if {
	notice.decision == allowed with input as with_contact(eob_email, {"email_suppressed": false})
	notice.decision == allowed with input as with_contact(eob_email, {})
}

test_suppression_is_about_email_only if {
	req := with_contact(eob_portal, {"email_suppressed": true})
	notice.decision.allow with input as req
}

# --- confidential-communication address (HIPAA 164.522(b)) --------------------------

test_confidential_address_routes_the_notice_there if {
	req := with_contact(eob_email, {"has_confidential_address": true})
	notice.decision == allowed_with([], ["route_to_confidential_address"]) with input as req
}

test_no_confidential_address_routes_as_usual if {
	notice.decision == allowed with input as with_contact(eob_email, {"has_confidential_address": false})
	notice.decision == allowed with input as with_contact(eob_email, {})
}

test_wrongly_typed_confidential_address_flag_routes_there if {
	routed := allowed_with([], ["route_to_confidential_address"])
	notice.decision == routed with input as with_contact(eob_email, {"has_confidential_address": "yes"})
	notice.decision == routed with input as with_contact(eob_email, {"has_confidential_address": null})
}

# --- agreed restrictions ---------------------------------------------------------------

test_restriction_on_the_notice_type_is_denied if {
	req := with_contact(eob_email, {"restrictions": ["eob"]})
	notice.decision == denied(["the patient's restriction \"eob\" covers this notice"]) with input as req
}

test_restriction_on_all_notices_is_denied if {
	req := with_contact(appointment_email, {"restrictions": ["all"]})
	notice.decision == denied(["the patient's restriction \"all\" covers this notice"]) with input as req
}

test_each_restriction_that_covers_the_notice_is_named if {
	req := with_contact(eob_email, {"restrictions": ["eob", "appointment", "all"]})
	notice.decision == denied([
		"the patient's restriction \"all\" covers this notice",
		"the patient's restriction \"eob\" covers this notice",
	]) with input as req
}

test_restriction_on_another_notice_type_does_not_deny if {
	req := with_contact(eob_email, {"restrictions": ["appointment"]})
	notice.decision == allowed with input as req
}

# --- marketing needs authorization (HIPAA 164.508(a)(3)) ----------------------------------

marketing_denied := denied(["purpose \"marketing\" needs the patient's authorization (contact.marketing_authorized is not true)"])

test_marketing_without_authorization_is_denied if {
	req := with_field(appointment_email, "purpose", "marketing")
	notice.decision == marketing_denied with input as req
	notice.decision == marketing_denied with input as with_contact(req, {"marketing_authorized": false})
	notice.decision == marketing_denied with input as with_contact(req, {"marketing_authorized": "true"})
}

test_marketing_with_authorization_is_allowed if {
	req := with_contact(with_field(appointment_email, "purpose", "marketing"), {"marketing_authorized": true})
	notice.decision == allowed with input as req
}

test_other_purposes_need_no_marketing_authorization if {
	every purpose in ["payment", "operations", "treatment"] {
		notice.decision == allowed with input as with_contact(with_field(appointment_email, "purpose", purpose), {"marketing_authorized": false})
	}
}

test_language_and_alternate_format_do_not_change_the_decision if {
	req := with_contact(eob_email, {"language": "es", "alternate_format": "large-print"})
	notice.decision == allowed with input as req
}
