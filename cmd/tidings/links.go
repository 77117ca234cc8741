package main

import (
	"fmt"
	"time"

	"github.com/tidings-health/tidings/journey"
	"github.com/tidings-health/tidings/links"
)

// linkSigner signs and checks the tokens of the unsubscribe and tracking
// links (TIDINGS_LINK_KEY, or a key derived from the blind index key).
func (a *app) linkSigner() (*links.Signer, error) {
	key, err := a.cfg.Links.LinkKey(a.keys)
	if err != nil {
		return nil, fmt.Errorf("TIDINGS_LINK_KEY: %w", err)
	}
	return links.NewSigner(key)
}

// now is the app's clock (tests move their own).
func (a *app) now() time.Time {
	if a.clock != nil {
		return a.clock.Now()
	}
	return journey.SystemClock{}.Now()
}

// linkMailer gives the worker's mails their unsubscribe and tracking links.
func (a *app) linkMailer() (*links.Mailer, error) {
	s, err := a.linkSigner()
	if err != nil {
		return nil, err
	}
	return &links.Mailer{Signer: s, BaseURL: a.cfg.PublicBaseURL, UnsubscribeTTL: a.cfg.Links.UnsubscribeTTL,
		TrackingTTL: a.cfg.Links.TrackingTTL, Now: a.now}, nil
}

// linkServer answers those links (serve).
func (a *app) linkServer() (*links.Server, error) {
	s, err := a.linkSigner()
	if err != nil {
		return nil, err
	}
	return &links.Server{Signer: s, Store: a.store, Waker: a.journeys(), Log: a.log.With("component", "links"), Now: a.now}, nil
}
