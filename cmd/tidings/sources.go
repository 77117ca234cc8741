package main

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"

	"github.com/tidings-health/tidings/fhir/client"
	"github.com/tidings-health/tidings/intake"
	"github.com/tidings-health/tidings/store"
)

// sourceReaders builds (once per source, then cached) the FHIR client for a
// registered source, with its sealed credential opened only in memory.
type sourceReaders struct {
	store *store.Store
	log   *slog.Logger
	mu    sync.Mutex
	cache map[string]*client.Client
}

func newSourceReaders(st *store.Store, log *slog.Logger) *sourceReaders {
	return &sourceReaders{store: st, log: log, cache: map[string]*client.Client{}}
}

func (r *sourceReaders) Reader(ctx context.Context, sourceID string) (intake.FHIRReader, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if c, ok := r.cache[sourceID]; ok {
		return c, nil
	}
	src, cred, err := r.store.SourceWithCredential(ctx, sourceID)
	if err != nil {
		return nil, err
	}
	auth, err := sourceAuth(src, cred)
	if err != nil {
		return nil, fmt.Errorf("source %s: %w", sourceID, err)
	}
	c, err := client.New(client.Options{BaseURL: src.BaseURL, Auth: auth, Logger: r.log.With("source", sourceID)})
	if err != nil {
		return nil, fmt.Errorf("source %s: %w", sourceID, err)
	}
	r.cache[sourceID] = c
	return c, nil
}

// sourceAuth turns a source's settings and opened credential into the client's auth.
func sourceAuth(src store.Source, cred []byte) (client.Auth, error) {
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
		return &client.SMARTBackend{TokenURL: src.TokenURL, ClientID: src.ClientID, KeyID: src.KeyID,
			Key: key, Scopes: strings.Fields(src.Scopes)}, nil
	default:
		return nil, fmt.Errorf("unknown auth type %q", src.AuthType)
	}
}
