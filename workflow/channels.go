package workflow

import (
	"fmt"
	"time"
)

// Channels a send step may name; the registry says which this deployment
// delivers.
const (
	ChannelEmail  = "email"
	ChannelSMS    = "sms"
	ChannelPortal = "portal" // nothing is sent: the notice waits in the portal
)

// Channel step types: shorthand, in a definition's source, for a send step
// on that channel. Parse rewrites them as send steps (type "send", channel
// the type), so stored definitions and the machine know only "send".
const (
	StepEmail  = ChannelEmail
	StepSMS    = ChannelSMS
	StepPortal = ChannelPortal
)

// Fallback is where a send step's notice goes instead when its channel
// cannot deliver it: the patient has no address for that channel (no
// email on file), or the channel refused the message for good (the relay
// rejected the address). A channel that takes the message, a policy that
// denies it or a patient who opted out of the channel does not fall back.
type Fallback struct {
	Channel string `json:"channel"`
	// Template is the fallback's template; default the step's.
	Template string `json:"template,omitempty"`
}

// normalizeChannelSteps rewrites email, sms and portal steps as send steps
// on that channel. A channel step that also names a channel is an error.
func normalizeChannelSteps(d *Definition) error {
	for i := range d.Steps {
		s := &d.Steps[i]
		switch s.Type {
		case StepEmail, StepSMS, StepPortal:
			if s.Channel != "" && s.Channel != s.Type {
				return fmt.Errorf("%w: steps[%d]: a %s step takes no channel (it is its channel)", ErrParse, i, s.Type)
			}
			s.Channel, s.Type = s.Type, StepSend
		}
	}
	return nil
}

// SMSOpening is the first instant at or after now when the workflow may
// send an SMS: now itself when the workflow has no SMSWindow or now is
// inside it, else the window's next opening (the quiet time is whatever
// lies outside the window). The window is read in the same zone a wait's
// window is (window, contact, workflow, the subject's UTC offset, UTC).
func SMSOpening(d Definition, now time.Time, contactTimeZone string, facts Facts) (time.Time, error) {
	if d.SMSWindow == nil {
		return now, nil
	}
	return NextOpening(now, *d.SMSWindow, zoneOf(d.SMSWindow.TimeZone, contactTimeZone, d.TimeZone, facts[FactUTCOffset]))
}

// zoneOf is the first zone that loads: the window's, the contact's, the
// workflow's IANA zone, then the subject's UTC offset, then UTC.
func zoneOf(windowZone, contactZone, workflowZone, utcOffset string) *time.Location {
	for _, name := range []string{windowZone, contactZone, workflowZone} {
		if loc, err := loadZone(name); err == nil {
			return loc
		}
	}
	if loc, err := offsetZone(utcOffset); err == nil {
		return loc
	}
	return time.UTC
}

// fallback checks a send step's fallback.
func (v *validator) fallback(at string, s Step) {
	f := s.Fallback
	if f == nil {
		return
	}
	switch {
	case f.Channel == "":
		v.add(at, "fallback.channel", "required for a fallback")
	case !v.r.Channels[f.Channel]:
		v.add(at, "fallback.channel", "unknown channel")
	case !v.r.deployed(f.Channel):
		v.add(at, "fallback.channel", notConfigured(f.Channel))
	case f.Channel == s.Channel:
		v.add(at, "fallback.channel", "must differ from the step's channel")
	}
	if s.Channel == ChannelPortal {
		v.add(at, "fallback", "a portal step always delivers (nothing is sent), so it cannot fall back")
	}
	if f.Template != "" && !v.r.Templates[f.Template] {
		v.add(at, "fallback.template", "unknown template")
	}
}

// smsSender checks that a workflow that texts has a sender name an SMS
// may carry.
func (v *validator) smsSender() {
	if v.r.SMSSender == nil || v.d.Sender.Name == "" || v.r.SMSSender(v.d.Sender.Name) {
		return
	}
	for _, s := range v.d.Steps {
		if s.Channel == ChannelSMS || (s.Fallback != nil && s.Fallback.Channel == ChannelSMS) {
			v.add("", "sender.name", "goes in every SMS this workflow sends: at most 40 letters, digits, spaces and & . , ' ( ) -")
			return
		}
	}
}

// smsWindow checks the workflow's SMS window.
func (v *validator) smsWindow() {
	w := v.d.SMSWindow
	if w == nil {
		return
	}
	if _, _, _, err := windowBounds(*w); err != nil {
		v.add("", "sms_window", err.Error())
	}
	if w.TimeZone != "" {
		if _, err := loadZone(w.TimeZone); err != nil {
			v.add("", "sms_window.time_zone", "not a loadable IANA time zone")
		}
	}
}
