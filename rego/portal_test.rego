# The portal channel: once the patient has proved who they are
# (channel.security "portal-authenticated") the portal shows what
# allowlist[notice_type]["portal"] lists, sensitive notices included (with a
# generic provider label and the revealing fields redacted); without that
# security it shows nothing but the link. Sample notices and helpers are in
# notice_test.rego.
package tidings.notice_test

import data.tidings.notice

authenticated_portal := {"type": "portal", "tls_enforced": false, "message_encrypted": false, "encryption_available": false, "security": "portal-authenticated"}

eob_portal := with_channel(eob_email, authenticated_portal)

test_authenticated_portal_shows_the_whole_eob if {
	notice.decision == allowed with input as eob_portal
}

test_authenticated_portal_shows_the_whole_appointment if {
	notice.decision == allowed with input as with_channel(appointment_email, authenticated_portal)
}

test_portal_without_authentication_shows_nothing_but_the_link if {
	req := with_channel(eob_email, object.remove(authenticated_portal, ["security"]))
	notice.decision == allowed_with(eob_phi, ["portal_only"]) with input as req
}

test_portal_authentication_counts_only_on_the_portal if {
	req := with_channel(eob_email, object.union(unprotected_email, {"security": "portal-authenticated"}))
	notice.decision == allowed_with(eob_phi, ["portal_only"]) with input as req
}

test_only_the_named_security_counts if {
	req := with_channel(eob_email, object.union(authenticated_portal, {"security": "portal"}))
	notice.decision == allowed_with(eob_phi, ["portal_only"]) with input as req
}

test_sensitive_eob_shows_on_the_portal_without_the_provider if {
	req := with_facts(eob_portal, {"use": "claim", "outcome": "complete", "sensitive_categories": ["mental_health"], "has_sensitive_diagnosis": true})
	notice.decision == allowed_with(["provider_name"], ["generic_provider_label"]) with input as req
}

test_portal_shows_only_its_allowlist if {
	req := with_extra_fields(eob_portal, {"diagnosis": "F32.9"})
	notice.decision.allow == false with input as req
	notice.decision.deny == ["field \"diagnosis\" is not allowed in a eob notice on portal"] with input as req
}

test_patient_who_opted_out_of_the_portal_sees_nothing_there if {
	req := with_contact(eob_portal, {"opted_out_channels": ["portal"]})
	notice.decision == denied(["the patient opted out of portal"]) with input as req
}
