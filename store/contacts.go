package store

import (
	"context"
	"fmt"
	"strings"

	"github.com/tidings-health/tidings/audit"
	"github.com/tidings-health/tidings/delivery"
	"github.com/tidings-health/tidings/workflow"
)

// UpsertContact stores (sealed) how to reach a patient. A contact registered
// through the API (Source "api") is the patient's one row without a FHIR
// source; one read from a FHIR bundle is stored for its source
// (c.FHIRSource) only, so neither overwrites the API's nor another source's.
func (s *Store) UpsertContact(ctx context.Context, tenantID, patientRef string, c delivery.Contact) error {
	if (c.Source == "api") != (c.FHIRSource == "") {
		return fmt.Errorf("upsert contact: a FHIR contact needs its source, an API contact has none")
	}
	idx := s.PatientIndex(tenantID, patientRef)
	patient := s.seal([]byte(patientRef), colContactPatient, tenantID, idx)
	var email []byte
	if c.Email != "" {
		email = s.seal([]byte(c.Email), colContactEmail, tenantID, idx)
	}
	var confidential []byte
	if c.ConfidentialEmail != "" {
		confidential = s.seal([]byte(c.ConfidentialEmail), colContactConfEmail, tenantID, idx)
	}
	var key []byte
	if c.EncryptionKey != "" {
		key = s.seal([]byte(c.EncryptionKey), colContactKey, tenantID, idx)
	}
	phone, phoneIndex := s.sealPhone(c.Phone, tenantID, idx)
	// The row under an older index version is this one's predecessor:
	// replaced in the same statement.
	q := `WITH replaced AS (DELETE FROM contacts WHERE tenant_id = ? AND patient_index IN ? AND fhir_source = ?)
		INSERT INTO contacts (tenant_id, patient_index, email_sealed, language, time_zone, source, updated_at,
			opted_out_channels, confidential_email_sealed, restrictions, marketing_authorized, alternate_format, fhir_source, patient_sealed,
			encryption_key_sealed, encryption_key_kind, phone_sealed, phone_index)
		VALUES (?, ?, ?, ?, ?, ?, now(), ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
		ON CONFLICT (tenant_id, patient_index, fhir_source) DO UPDATE SET
			email_sealed = EXCLUDED.email_sealed, patient_sealed = EXCLUDED.patient_sealed, language = EXCLUDED.language,
			time_zone = EXCLUDED.time_zone, source = EXCLUDED.source, updated_at = now(),
			opted_out_channels = EXCLUDED.opted_out_channels, confidential_email_sealed = EXCLUDED.confidential_email_sealed,
			restrictions = EXCLUDED.restrictions, marketing_authorized = EXCLUDED.marketing_authorized,
			alternate_format = EXCLUDED.alternate_format,
			encryption_key_sealed = EXCLUDED.encryption_key_sealed, encryption_key_kind = EXCLUDED.encryption_key_kind,
			phone_sealed = EXCLUDED.phone_sealed, phone_index = EXCLUDED.phone_index,
			email_hard_bounces = CASE WHEN EXCLUDED.source = 'api' THEN 0 ELSE contacts.email_hard_bounces END,
			email_suppressed_at = CASE WHEN EXCLUDED.source = 'api' THEN NULL ELSE contacts.email_suppressed_at END`
	return s.InTx(ctx, func(tx *Store) error {
		res := tx.q(ctx).Exec(q, tenantID, s.olderPatientIndexes(tenantID, patientRef), c.FHIRSource, tenantID, idx, email, c.Language, c.TimeZone, c.Source,
			strings.Join(c.OptedOutChannels, ","), confidential, strings.Join(c.Restrictions, ","), c.MarketingAuthorized, c.AlternateFormat, c.FHIRSource, patient,
			key, c.EncryptionKeyKind(), phone, phoneIndex)
		if res.Error != nil {
			return fmt.Errorf("upsert contact: %w", translate(res.Error))
		}
		return tx.Audit(ctx, AuditRecord{
			TenantID: tenantID, Actor: audit.ActorOr(ctx, c.Source), Action: "contact.upsert",
			SubjectType: "contact", SubjectID: idx,
		})
	})
}

// ContactFor finds a patient's contact: the one registered through the
// API, else the one the source's bundles gave (source "": the API's only);
// never another source's. ErrNotFound when none.
func (s *Store) ContactFor(ctx context.Context, tenantID, source, patientRef string) (delivery.Contact, error) {
	var c Contact
	err := s.q(ctx).Where("tenant_id = ? AND patient_index IN ? AND fhir_source IN ('', ?)", tenantID, s.patientProbes(tenantID, patientRef), source).
		Order(contactPrecedence).Take(&c).Error
	if err != nil {
		return delivery.Contact{}, translate(err)
	}
	return s.contact(c)
}

// contactPrecedence orders a patient's contacts as they are used: the
// API's (no FHIR source) first.
const contactPrecedence = "fhir_source = '' DESC"

// contact opens a contact row.
func (s *Store) contact(c Contact) (delivery.Contact, error) {
	out := delivery.Contact{Language: c.Language, TimeZone: c.TimeZone, Source: c.Source, FHIRSource: c.FHIRSource,
		OptedOutChannels: splitList(c.OptedOutChannels), Restrictions: splitList(c.Restrictions),
		MarketingAuthorized: c.MarketingAuthorized, AlternateFormat: c.AlternateFormat, EmailSuppressed: c.EmailSuppressedAt != nil}
	for _, f := range []struct {
		sealed []byte
		col    sealedColumn
		dst    *string
	}{{c.EmailSealed, colContactEmail, &out.Email}, {c.ConfidentialEmailSealed, colContactConfEmail, &out.ConfidentialEmail},
		{c.EncryptionKeySealed, colContactKey, &out.EncryptionKey},
		{c.PhoneSealed, colContactPhone, &out.Phone}} {
		if len(f.sealed) == 0 {
			continue
		}
		plain, err := s.open(f.sealed, f.col, c.TenantID, c.PatientIndex)
		if err != nil {
			return delivery.Contact{}, fmt.Errorf("open contact: %w", err)
		}
		*f.dst = string(plain)
	}
	return out, nil
}

// ContactPreferences are the time zone and language a patient's runs
// schedule and choose templates by, from the contact ContactFor would use;
// zero when no contact is stored. Nothing sealed is opened.
func (s *Store) ContactPreferences(ctx context.Context, tenantID, source, patientRef string) (workflow.Contact, error) {
	prefs, err := s.ContactPreferencesOf(ctx, tenantID, source, []string{patientRef})
	return prefs[patientRef], err
}

func splitList(s string) []string {
	if s == "" {
		return nil
	}
	return strings.Split(s, ",")
}
