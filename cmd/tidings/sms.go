package main

import (
	"strings"

	"github.com/tidings-health/tidings/api"
	"github.com/tidings-health/tidings/config"
	"github.com/tidings-health/tidings/delivery"
	"github.com/tidings-health/tidings/notify"
	"github.com/tidings-health/tidings/workflow"
)

// smsChannel builds the SMS channel when a provider is configured
// (TIDINGS_SMS_*); nil when none is. Its status callbacks come back to
// serve's /sms/status, and its links must point at this deployment's portal.
func smsChannel(cfg config.Config) (*notify.SMSChannel, error) {
	if !cfg.SMS.Enabled() {
		return nil, nil
	}
	base := strings.TrimRight(cfg.PublicBaseURL, "/")
	return notify.NewSMSChannel(notify.SMSConfig{BaseURL: cfg.SMS.BaseURL, AccountSID: cfg.SMS.AccountSID,
		AuthToken: cfg.SMS.AuthToken, From: cfg.SMS.From, StatusCallback: base + "/sms/status", PortalBaseURL: base})
}

// smsCallbacks serves the provider's signed callbacks when a provider is
// configured; nil when none is.
func (a *app) smsCallbacks() *api.SMSCallbacks {
	if !a.cfg.SMS.Enabled() {
		return nil
	}
	return &api.SMSCallbacks{Replies: delivery.SMSReplies{Store: a.store}, AuthToken: a.cfg.SMS.AuthToken, PublicBaseURL: a.cfg.PublicBaseURL}
}

// configuredChannels are the channels this deployment delivers: email and
// the portal always, SMS when a provider is configured. Workflows that send
// on another are refused when saved.
func (a *app) configuredChannels() []string {
	chans := []string{workflow.ChannelEmail, workflow.ChannelPortal}
	if a.cfg.SMS.Enabled() {
		chans = append(chans, workflow.ChannelSMS)
	}
	return chans
}
