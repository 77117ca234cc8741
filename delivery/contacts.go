package delivery

import (
	"context"
	"net/mail"
	"regexp"
	"strings"
	"time"

	"github.com/tidings-health/tidings/fault"
	"github.com/tidings-health/tidings/notify"
)

// ContactStore stores patient contacts (sealed).
type ContactStore interface {
	UpsertContact(ctx context.Context, tenantID, patientRef string, c Contact) error
}

// Contacts registers the contacts and requests patients make through a
// tenant's systems (HIPAA 164.522: opt-outs, confidential communications,
// restrictions). A contact registered this way is never overwritten by one
// read from a FHIR bundle, and is used for the patient whichever source
// the notice's event came from.
type Contacts struct {
	Store ContactStore
}

var (
	fhirID          = regexp.MustCompile(`^[A-Za-z0-9\-.]{1,64}$`)
	langTag         = regexp.MustCompile(`^[A-Za-z]{2,3}(-[A-Za-z0-9]{2,8})*$`)
	restrictionName = regexp.MustCompile(`^[a-z][a-z0-9_-]{0,31}$`)
	channelNames    = map[string]bool{"email": true, "sms": true, "push": true, "portal": true}
)

// Register validates c and stores it as Patient/{patientID}'s contact. A
// contact that breaks a rule is refused with every problem at once; the
// messages name fields and rules, never the values.
func (cs Contacts) Register(ctx context.Context, tenantID, patientID string, c Contact) error {
	if !fhirID.MatchString(patientID) {
		return fault.New(fault.Invalid, "the patient id is not a FHIR id")
	}
	if problems := c.problems(); len(problems) > 0 {
		return fault.New(fault.Invalid, strings.Join(problems, "; "))
	}
	c.Source, c.FHIRSource = "api", "" // wins over every source's bundles
	return cs.Store.UpsertContact(ctx, tenantID, "Patient/"+patientID, c)
}

func plainAddress(s string) bool {
	addr, err := mail.ParseAddress(s)
	return err == nil && addr.Address == s
}

// problems lists what is wrong with a contact registered through the API.
func (c Contact) problems() []string {
	var problems []string
	switch {
	case c.Email == "" && c.Phone == "":
		problems = append(problems, "email or phone is required")
	case c.Email != "" && !plainAddress(c.Email):
		problems = append(problems, "email must be a plain address such as name@example.org")
	}
	if c.Phone != "" && !notify.ValidE164(c.Phone) {
		problems = append(problems, "phone must be an E.164 number such as +15551234567")
	}
	if c.Language != "" && !langTag.MatchString(c.Language) {
		problems = append(problems, "language must be a BCP-47 tag such as en or es-MX")
	}
	if c.TimeZone != "" {
		if _, err := time.LoadLocation(c.TimeZone); err != nil || c.TimeZone == "Local" {
			problems = append(problems, "time_zone must be an IANA zone such as America/Chicago")
		}
	}
	for _, ch := range c.OptedOutChannels {
		if !channelNames[ch] {
			problems = append(problems, "opted_out_channels: each must be email, sms, push or portal")
			break
		}
	}
	if c.ConfidentialEmail != "" && !plainAddress(c.ConfidentialEmail) {
		problems = append(problems, "confidential_email must be a plain address")
	}
	for _, r := range c.Restrictions {
		if !restrictionName.MatchString(r) {
			problems = append(problems, "restrictions: each must be a short lower-case name such as eob or all")
			break
		}
	}
	if c.AlternateFormat != "" && !restrictionName.MatchString(c.AlternateFormat) {
		problems = append(problems, "alternate_format must be a short lower-case name such as large-print")
	}
	if p := keyProblem(c.EncryptionKey, time.Now()); p != "" {
		problems = append(problems, p)
	}
	if len(c.OptedOutChannels) > 4 || len(c.Restrictions) > 16 {
		problems = append(problems, "too many opted_out_channels or restrictions")
	}
	return problems
}
