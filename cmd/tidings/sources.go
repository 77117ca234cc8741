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
	"github.com/tidings-health/tidings/store"
)

// sourceReaders builds (once per source, then cached) the FHIR client for a
// registered source, with its sealed credential opened only in memory.
type sourceReaders struct {
	store        *store.Store
	allowPrivate bool
	log          *slog.Logger
	mu           sync.Mutex
	cache        map[string]sourceClient
}

type sourceClient struct {
	c      *client.Client
	tenant string
}

func newSourceReaders(st *store.Store, log *slog.Logger, allowPrivate bool) *sourceReaders {
	return &sourceReaders{store: st, log: log, allowPrivate: allowPrivate, cache: map[string]sourceClient{}}
}

func (r *sourceReaders) Reader(ctx context.Context, sourceID string) (intake.FHIRReader, error) {
	sc, err := r.client(ctx, sourceID)
	return sc.c, err
}

// Creator gives the client that creates resources on a tenant's source, and
// its base URL; another tenant's source is not found.
func (r *sourceReaders) Creator(ctx context.Context, tenantID, sourceID string) (intake.FHIRCreator, string, error) {
	sc, err := r.client(ctx, sourceID)
	if err != nil {
		return nil, "", err
	}
	if sc.tenant != tenantID {
		return nil, "", errNoSuchSource
	}
	return sc.c, sc.c.BaseURL(), nil
}

func (r *sourceReaders) client(ctx context.Context, sourceID string) (sourceClient, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if sc, ok := r.cache[sourceID]; ok {
		return sc, nil
	}
	src, cred, err := r.store.SourceWithCredential(ctx, sourceID)
	if errors.Is(err, fault.NotFound) {
		return sourceClient{}, errNoSuchSource
	}
	if err != nil {
		return sourceClient{}, err
	}
	auth, err := sourceAuth(src, cred, !r.allowPrivate)
	if err != nil {
		return sourceClient{}, fmt.Errorf("source %s: %w", sourceID, err)
	}
	c, err := client.New(client.Options{BaseURL: src.BaseURL, Auth: auth, Logger: r.log.With("source", sourceID),
		DenyPrivateNetworks: !r.allowPrivate})
	if err != nil {
		return sourceClient{}, fmt.Errorf("source %s: %w", sourceID, err)
	}
	sc := sourceClient{c: c, tenant: src.TenantID}
	r.cache[sourceID] = sc
	return sc, nil
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
