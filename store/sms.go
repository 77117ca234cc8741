package store

import (
	"context"
	"fmt"

	"github.com/tidings-health/tidings/audit"
	"github.com/tidings-health/tidings/fault"
)

// indexPhone is the purpose of phone numbers' blind indexes.
const indexPhone = "phone"

// PhoneIndex is the blind index of an E.164 phone number in a tenant,
// under the tenant's current index key version.
func (s *Store) PhoneIndex(tenantID, phone string) string {
	return s.keys.BlindIndex(tenantID, indexPhone, phone)
}

// sealPhone seals a contact's phone for its row and indexes it; nil and ""
// for no phone.
func (s *Store) sealPhone(phone, tenantID, patientIndex string) ([]byte, string) {
	if phone == "" {
		return nil, ""
	}
	return s.seal([]byte(phone), colContactPhone, tenantID, patientIndex), s.PhoneIndex(tenantID, phone)
}

// SetSMSOptOut records a STOP (optOut) or START reply from phone: "sms" is
// added to, or removed from, the opted-out channels of every contact with
// that number, in every tenant (the sending number is the deployment's),
// each change audited (actor "sms"). Each tenant's rows are found by the
// number's index under every key version they may carry. It returns how
// many contacts hold the number.
func (s *Store) SetSMSOptOut(ctx context.Context, phone string, optOut bool) (int, error) {
	set := `array_to_string(array_remove(string_to_array(opted_out_channels, ','), 'sms'), ',')`
	action := "contact.sms_opt_in"
	if optOut {
		set = `CASE WHEN 'sms' = ANY(string_to_array(opted_out_channels, ',')) THEN opted_out_channels
			WHEN opted_out_channels = '' THEN 'sms' ELSE opted_out_channels || ',sms' END`
		action = "contact.sms_opt_out"
	}
	var n int
	err := s.InTx(ctx, func(tx *Store) error {
		var tenants []string
		if err := tx.q(ctx).Raw(`SELECT DISTINCT tenant_id FROM contacts WHERE phone_index <> ''`).Scan(&tenants).Error; err != nil {
			return fmt.Errorf("sms opt-out: %w", translate(err))
		}
		var rows []struct{ TenantID, PatientIndex string }
		for _, t := range tenants {
			var found []struct{ TenantID, PatientIndex string }
			if err := tx.q(ctx).Raw(`UPDATE contacts SET opted_out_channels = `+set+`, updated_at = now()
				WHERE tenant_id = ? AND phone_index IN ? RETURNING tenant_id, patient_index`,
				t, s.keys.BlindIndexes(t, indexPhone, phone)).Scan(&found).Error; err != nil {
				return fmt.Errorf("sms opt-out: %w", translate(err))
			}
			rows = append(rows, found...)
		}
		n = len(rows)
		audits := make([]AuditRecord, len(rows))
		for i, r := range rows {
			audits[i] = AuditRecord{TenantID: r.TenantID, Actor: audit.ActorOr(ctx, "sms"), Action: action,
				SubjectType: "contact", SubjectID: r.PatientIndex, Detail: map[string]any{"channel": "sms"}}
		}
		if len(audits) == 0 {
			return nil
		}
		return tx.AuditMany(ctx, audits)
	})
	return n, err
}

// RecordSMSStatus records the provider's status for the SMS delivery whose
// reference (its message_id) is ref, with the provider's id for the
// message. fault.NotFound when no SMS delivery has that reference.
func (s *Store) RecordSMSStatus(ctx context.Context, ref, providerID, status string) error {
	res := s.q(ctx).Exec(`UPDATE deliveries SET provider_status = ?, provider_message_id = ?, provider_status_at = now(), updated_at = now()
		WHERE channel = 'sms' AND message_id = ? AND message_id <> ''`, status, providerID, ref)
	if res.Error != nil {
		return fmt.Errorf("record sms status: %w", translate(res.Error))
	}
	if res.RowsAffected == 0 {
		return fault.New(fault.NotFound, "no SMS delivery has this reference")
	}
	return nil
}

// SMSStatus is the provider status and id recorded on the SMS delivery
// with reference ref ("" when none came yet).
func (s *Store) SMSStatus(ctx context.Context, ref string) (status, providerID string, err error) {
	var row struct{ ProviderStatus, ProviderMessageID string }
	err = s.q(ctx).Raw(`SELECT provider_status, provider_message_id FROM deliveries WHERE channel = 'sms' AND message_id = ?`, ref).
		Scan(&row).Error
	return row.ProviderStatus, row.ProviderMessageID, translate(err)
}
