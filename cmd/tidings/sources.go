package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"

	"github.com/tidings-health/tidings/fault"
	"github.com/tidings-health/tidings/fhir/client"
	"github.com/tidings-health/tidings/intake"
	"github.com/tidings-health/tidings/metrics"
	"github.com/tidings-health/tidings/store"
)

// sourceReaders builds (once per source, then cached) the FHIR client for a
// tenant's registered source, with its sealed credential opened only in
// memory. Source ids are per tenant: the cache is keyed by both.
type sourceReaders struct {
	store        *store.Store
	allowPrivate bool
	log          *slog.Logger
	metrics      *metrics.Metrics
	mu           sync.Mutex
	cache        map[string]*client.Client
}

func newSourceReaders(st *store.Store, log *slog.Logger, allowPrivate bool, m *metrics.Metrics) *sourceReaders {
	return &sourceReaders{store: st, log: log, allowPrivate: allowPrivate, metrics: m, cache: map[string]*client.Client{}}
}

// Reader gives the client that reads from a tenant's source.
func (r *sourceReaders) Reader(ctx context.Context, tenantID, sourceID string) (intake.FHIRReader, error) {
	return r.client(ctx, tenantID, sourceID)
}

// Creator gives the client that creates resources on a tenant's source, and
// its base URL; another tenant's source is not found.
func (r *sourceReaders) Creator(ctx context.Context, tenantID, sourceID string) (intake.FHIRCreator, string, error) {
	c, err := r.client(ctx, tenantID, sourceID)
	if err != nil {
		return nil, "", err
	}
	return c, c.BaseURL(), nil
}

func (r *sourceReaders) client(ctx context.Context, tenantID, sourceID string) (*client.Client, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	key := tenantID + "|" + sourceID // a source id never holds '|'
	if c, ok := r.cache[key]; ok {
		return c, nil
	}
	src, cred, err := r.store.SourceWithCredential(ctx, tenantID, sourceID)
	if errors.Is(err, fault.NotFound) {
		return nil, errNoSuchSource
	}
	if err != nil {
		return nil, err
	}
	auth, err := sourceAuth(src, cred, !r.allowPrivate)
	if err != nil {
		return nil, fmt.Errorf("source %s: %w", sourceID, err)
	}
	c, err := client.New(client.Options{BaseURL: src.BaseURL, Auth: auth, Logger: r.log.With("source", sourceID),
		DenyPrivateNetworks: !r.allowPrivate, Metrics: r.metrics})
	if err != nil {
		return nil, fmt.Errorf("source %s: %w", sourceID, err)
	}
	r.cache[key] = c
	return c, nil
}

// errNoSuchSource: another tenant's source is as unknown as a missing one.
var errNoSuchSource = fault.New(fault.Invalid, "source_id names no registered source of this tenant")

// sourceAuth turns a source's settings and opened credential into the client's auth.
func sourceAuth(src intake.Source, cred []byte, publicOnly bool) (client.Auth, error) {
	switch src.AuthType {
	case "none":
		return nil, nil
	case "bearer":
		return client.StaticBearer{Token: strings.TrimSpace(string(cred))}, nil
	case "smart-backend":
		key, err := client.ParsePrivateKeyPEM(cred)
		if err != nil {
			return nil, err
		}
		sb := &client.SMARTBackend{TokenURL: src.TokenURL, ClientID: src.ClientID, KeyID: src.KeyID,
			Key: key, Scopes: strings.Fields(src.Scopes)}
		if publicOnly {
			sb.HTTP = client.PublicOnlyHTTPClient()
		}
		return sb, nil
	default:
		return nil, fmt.Errorf("unknown auth type %q", src.AuthType)
	}
}
