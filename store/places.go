package store

import (
	"strconv"

	"github.com/tidings-health/tidings/seal"
)

// sealedColumn is a column whose values the application seals. A value is
// bound to its place (tenant, table, column and the row's key, see
// seal.Place): copied to another row, column or tenant it does not open.
//
// The row key is what identifies the row when the value is sealed, which is
// often before the row has its serial id:
//
//	events.resource_sealed            dedupe_key
//	contacts.email_sealed             patient_index (the API's row and each source's share it)
//	contacts.confidential_email_sealed patient_index
//	contacts.encryption_key_sealed    patient_index
//	contacts.patient_sealed           patient_index (so are engagements' and disclosures')
//	notices.payload_sealed            portal_token (unique)
//	notices.portal_sealed             portal_token (unique)
//	subscriptions.hmac_key_sealed     id
//	fhir_sources.credential_sealed    id
//	runs.facts_sealed                 subject (a subject's runs share its facts; not its source)
//	engagements.data_sealed           id (taken from the sequence first)
//	engagements.patient_sealed        patient_index
//	segment_members.patient_sealed    segment, patient_index
//	purpose_opt_outs.patient_sealed   purpose, patient_index
//	webhook_endpoints.secret_sealed   id
//	disclosures.recipient_sealed      patient_index, ref (random, chosen before the insert)
//	disclosures.patient_sealed        patient_index
//	deliveries.disclosure_sealed      notice_id, channel
type sealedColumn struct{ table, column string }

var (
	colEventResource       = sealedColumn{"events", "resource_sealed"}
	colContactEmail        = sealedColumn{"contacts", "email_sealed"}
	colContactConfEmail    = sealedColumn{"contacts", "confidential_email_sealed"}
	colContactPhone        = sealedColumn{"contacts", "phone_sealed"}
	colContactKey          = sealedColumn{"contacts", "encryption_key_sealed"}
	colContactPatient      = sealedColumn{"contacts", "patient_sealed"}
	colEngagementPatient   = sealedColumn{"engagements", "patient_sealed"}
	colDisclosurePatient   = sealedColumn{"disclosures", "patient_sealed"}
	colNoticePayload       = sealedColumn{"notices", "payload_sealed"}
	colNoticePortal        = sealedColumn{"notices", "portal_sealed"}
	colSubscriptionHMAC    = sealedColumn{"subscriptions", "hmac_key_sealed"}
	colSourceCredential    = sealedColumn{"fhir_sources", "credential_sealed"}
	colRunFacts            = sealedColumn{"runs", "facts_sealed"}
	colEngagementData      = sealedColumn{"engagements", "data_sealed"}
	colSegmentPatient      = sealedColumn{"segment_members", "patient_sealed"}
	colOptOutPatient       = sealedColumn{"purpose_opt_outs", "patient_sealed"}
	colWebhookSecret       = sealedColumn{"webhook_endpoints", "secret_sealed"}
	colDisclosureRecipient = sealedColumn{"disclosures", "recipient_sealed"}
	colDeliveryDisclosure  = sealedColumn{"deliveries", "disclosure_sealed"}
	legacyContexts         = map[sealedColumn]string{
		// Before places both contact columns were sealed with one context.
		colContactConfEmail: "contacts.email_sealed",
	}
)

// at is the place of this column's value in one row.
func (c sealedColumn) at(tenantID string, row ...string) seal.Place {
	return seal.Place{Tenant: tenantID, Table: c.table, Column: c.column, Row: row, Legacy: legacyContexts[c]}
}

func (s *Store) seal(plain []byte, c sealedColumn, tenantID string, row ...string) []byte {
	return s.keys.Seal(plain, c.at(tenantID, row...))
}

func (s *Store) open(sealed []byte, c sealedColumn, tenantID string, row ...string) ([]byte, error) {
	return s.keys.Open(sealed, c.at(tenantID, row...))
}

func itoa(id int64) string { return strconv.FormatInt(id, 10) }
