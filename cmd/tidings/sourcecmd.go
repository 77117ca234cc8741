package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/tidings-health/tidings/intake"
	"github.com/tidings-health/tidings/store"
)

func runSource(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] != "add" {
		fmt.Fprint(stderr, "Usage: tidings source add [flags]\n\n  add   register a FHIR server Tidings fetches from (credentials sealed at rest)\n")
		if len(args) > 0 && (args[0] == "-h" || args[0] == "--help") {
			return nil
		}
		return usageError{"source needs add"}
	}
	fs := newFlags("source add --id ID --tenant TENANT --base-url URL --auth none|bearer|smart-backend [flags]", `Registers a FHIR server that Tidings reads from: for id-only and empty
notifications, rest-hook pings, and to recover missed events. The credential (a
bearer token, or the PEM private key of a SMART Backend Services client) is read
from a file and sealed (AES-256-GCM) before it is stored; it is never printed.
Needs TIDINGS_DATABASE_URL, TIDINGS_SEAL_KEYS and TIDINGS_BLIND_INDEX_KEY.`, stderr)
	id := fs.String("id", "", "source id ([A-Za-z0-9._-], up to 64)")
	tenant := fs.String("tenant", "", "tenant the source belongs to (created if missing)")
	baseURL := fs.String("base-url", "", "FHIR service base, e.g. https://ehr.example.org/fhir/r4 (https unless loopback)")
	auth := fs.String("auth", "none", "none, bearer or smart-backend")
	tokenFile := fs.String("token-file", "", "bearer: file holding the token")
	keyFile := fs.String("key-file", "", "smart-backend: PEM private key (RSA >= 2048 for RS384, or P-384 for ES384)")
	clientID := fs.String("client-id", "", "smart-backend: the registered client id")
	tokenURL := fs.String("token-url", "", "smart-backend: the authorization server's token endpoint")
	keyID := fs.String("key-id", "", "smart-backend: kid of the key in the client's JWK Set")
	scopes := fs.String("scopes", "system/ExplanationOfBenefit.rs system/Appointment.rs system/Patient.rs system/Organization.rs system/Practitioner.rs", "smart-backend: space-separated scopes")
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	src := intake.Source{ID: *id, TenantID: *tenant, BaseURL: *baseURL, AuthType: *auth,
		TokenURL: *tokenURL, ClientID: *clientID, KeyID: *keyID, Scopes: *scopes}
	var cred []byte
	var err error
	switch *auth {
	case "bearer":
		cred, err = os.ReadFile(*tokenFile)
	case "smart-backend":
		cred, err = os.ReadFile(*keyFile)
	}
	if err != nil {
		return usageError{"cannot read the credential file: " + err.Error()}
	}
	problems := intake.ValidateSource(src, cred)
	if !subscriptionID.MatchString(src.TenantID) {
		problems = append(problems, "tenant: 1-64 of A-Z a-z 0-9 . _ -")
	}
	if len(problems) > 0 {
		fs.Usage()
		return usageError{strings.Join(problems, "; ")}
	}
	st, err := openOperatorStore(ctx, true)
	if err != nil {
		return err
	}
	defer st.Close()
	if err := st.EnsureTenant(ctx, src.TenantID, src.TenantID); err != nil {
		return err
	}
	if err := st.CreateSource(ctx, src, cred); errors.Is(err, store.ErrDuplicate) {
		return fmt.Errorf("source %q already exists", src.ID)
	} else if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "source %q registered for tenant %q (%s, %s)\n", src.ID, src.TenantID, src.BaseURL, src.AuthType)
	return nil
}
