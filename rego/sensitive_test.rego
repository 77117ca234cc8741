# Rule 3, sensitive categories: a notice about a claim or appointment in a
# sensitive category names no provider or location and goes portal-only, or,
# when settings prefer it and the channel can, goes encrypted with only the
# names redacted. Sample notices and helpers are in notice_test.rego.
package tidings.notice_test

import data.tidings.notice

sensitive_facts(categories) := {"use": "claim", "outcome": "complete", "sensitive_categories": categories, "has_sensitive_diagnosis": count(categories) > 0}

mental_health_eob := with_facts(eob_email, sensitive_facts(["mental_health"]))

encrypting_email := {"type": "email", "tls_enforced": true, "message_encrypted": false, "encryption_available": true}

test_shipped_categories_are_as_documented if {
	object.keys(data.data.sensitive.categories) == {"mental_health", "substance_use", "hiv_sti", "reproductive_health", "genetic"}
	every category in data.data.sensitive.categories {
		category.source != ""
	}
}

test_mental_health_eob_goes_portal_only_with_a_generic_provider_label if {
	notice.decision == allowed_with(eob_phi, ["portal_only", "generic_provider_label"]) with input as mental_health_eob
}

test_every_listed_category_is_sensitive if {
	every name, _ in data.data.sensitive.categories {
		notice.decision == allowed_with(eob_phi, ["portal_only", "generic_provider_label"]) with input as with_facts(eob_email, {"sensitive_categories": [name]})
	}
}

test_an_unknown_category_is_still_sensitive if {
	req := with_facts(eob_email, {"sensitive_categories": ["a_category_added_later"]})
	notice.decision == allowed_with(eob_phi, ["portal_only", "generic_provider_label"]) with input as req
}

test_no_category_is_not_sensitive if {
	notice.decision == allowed with input as with_facts(eob_email, sensitive_facts([]))
	notice.decision == allowed with input as with_facts(eob_email, {"sensitive_categories": null, "has_sensitive_diagnosis": false})
}

test_has_sensitive_diagnosis_alone_is_sensitive if {
	req := with_facts(eob_email, {"sensitive_categories": [], "has_sensitive_diagnosis": true})
	notice.decision == allowed_with(eob_phi, ["portal_only", "generic_provider_label"]) with input as req
}

test_wrongly_typed_sensitivity_facts_count_as_sensitive if {
	sensitive := allowed_with(eob_phi, ["portal_only", "generic_provider_label"])
	notice.decision == sensitive with input as with_facts(eob_email, {"has_sensitive_diagnosis": "false"})
	notice.decision == sensitive with input as with_facts(eob_email, {"sensitive_categories": "mental_health"})
	notice.decision == sensitive with input as with_facts(eob_email, {"sensitive_categories": ""})
	notice.decision == sensitive with input as with_facts(eob_email, {"has_sensitive_diagnosis": null})
}

test_sensitive_appointment_names_neither_provider_nor_location if {
	req := with_facts(appointment_email, {"sensitive_categories": ["substance_use"]})
	notice.decision == allowed_with(appointment_phi, ["portal_only", "generic_provider_label"]) with input as req
}

test_sensitive_notice_with_only_the_portal_link_goes_portal_only if {
	req := with_payload(mental_health_eob, portal_link)
	notice.decision == allowed_with([], ["portal_only", "generic_provider_label"]) with input as req
}

test_shipped_settings_prefer_portal_only_over_encryption if {
	data.data.settings.sensitive.prefer_message_encryption == false
	req := with_channel(mental_health_eob, encrypting_email)
	notice.decision == allowed_with(eob_phi, ["portal_only", "generic_provider_label"]) with input as req
}

# --- settings.sensitive.prefer_message_encryption ------------------------------

test_encryption_instead_of_portal_only_when_settings_prefer_it if {
	req := with_channel(mental_health_eob, encrypting_email)
	notice.decision == allowed_with(["provider_name"], ["requires_message_encryption", "generic_provider_label"]) with input as req
		with data.data.settings.sensitive.prefer_message_encryption as true
}

test_encryption_preferred_for_an_appointment_redacts_provider_and_location if {
	req := with_channel(with_facts(appointment_email, {"sensitive_categories": ["genetic"]}), encrypting_email)
	notice.decision == allowed_with(["location_name", "provider_name"], ["requires_message_encryption", "generic_provider_label"]) with input as req
		with data.data.settings.sensitive.prefer_message_encryption as true
}

test_required_encryption_protects_a_channel_without_tls if {
	req := with_channel(mental_health_eob, object.union(unprotected_email, {"encryption_available": true}))
	notice.decision == allowed_with(["provider_name"], ["requires_message_encryption", "generic_provider_label"]) with input as req
		with data.data.settings.sensitive.prefer_message_encryption as true
}

test_encryption_preferred_but_unavailable_goes_portal_only if {
	unavailable := with_channel(mental_health_eob, object.union(encrypting_email, {"encryption_available": false}))
	notice.decision == allowed_with(eob_phi, ["portal_only", "generic_provider_label"]) with input as unavailable
		with data.data.settings.sensitive.prefer_message_encryption as true
	not_boolean := with_channel(mental_health_eob, object.union(encrypting_email, {"encryption_available": "true"}))
	notice.decision == allowed_with(eob_phi, ["portal_only", "generic_provider_label"]) with input as not_boolean
		with data.data.settings.sensitive.prefer_message_encryption as true
}

test_encryption_is_never_offered_on_sms if {
	req := with_payload(with_channel(mental_health_eob, {"type": "sms", "tls_enforced": true, "message_encrypted": false, "encryption_available": true}), portal_link)
	notice.decision == allowed_with([], ["portal_only", "generic_provider_label"]) with input as req
		with data.data.settings.sensitive.prefer_message_encryption as true
}

test_revealing_fields_are_read_from_data if {
	req := with_channel(with_facts(appointment_email, {"sensitive_categories": ["hiv_sti"]}), encrypting_email)
	notice.decision == allowed_with(["provider_name"], ["requires_message_encryption", "generic_provider_label"]) with input as req
		with data.data.settings.sensitive.prefer_message_encryption as true
		with data.data.settings.sensitive.revealing_fields as ["provider_name"]
}

# --- appointments ---------------------------------------------------------------

# The fields an appointment notice names its provider and location by
# (notify.AppointmentNotice) are the ones the allowlist lets it carry, and
# all of them are revealing.
test_shipped_revealing_fields_cover_the_appointment_names if {
	names := {"provider_name", "location_name"}
	every name in names {
		name in data.data.allowlist.appointment.email
		name in data.data.settings.sensitive.revealing_fields
	}
}

test_every_listed_category_makes_an_appointment_portal_only if {
	every name, _ in data.data.sensitive.categories {
		notice.decision == allowed_with(appointment_phi, ["portal_only", "generic_provider_label"]) with input as with_facts(appointment_email, {"status": "booked", "sensitive_categories": [name], "has_sensitive_diagnosis": true})
	}
}

# A reason the worker could not read (has_sensitive_diagnosis without a
# category) is treated as sensitive.
test_an_appointment_with_an_unread_reason_is_sensitive if {
	req := with_facts(appointment_email, {"status": "booked", "sensitive_categories": [], "has_sensitive_diagnosis": true})
	notice.decision == allowed_with(appointment_phi, ["portal_only", "generic_provider_label"]) with input as req
}

test_an_ordinary_appointment_names_provider_and_location if {
	req := with_facts(appointment_email, {"status": "booked", "sensitive_categories": [], "has_sensitive_diagnosis": false})
	notice.decision == allowed with input as req
}

test_shipped_snomed_concepts_name_their_source if {
	every category in data.data.sensitive.categories {
		count(category.snomed) > 0
		category.snomed_source != ""
	}
}
