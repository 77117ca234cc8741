package client

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
)

// TestNoSecretsOrQueryValuesInErrorsAndLogs runs failing requests whose
// tokens, client assertions and query values are canaries, then checks that
// no error string, log line or formatted auth value contains any of them.
func TestNoSecretsOrQueryValuesInErrorsAndLogs(t *testing.T) {
	const (
		staticTok = "CANARY-static-token-7f3a"
		patientID = "CANARY-patient-4711"
	)
	var logs bytes.Buffer
	logger := slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	var errs []error
	collect := func(_ any, err error) {
		t.Helper()
		if err == nil {
			t.Fatal("scenario did not fail")
		}
		errs = append(errs, err)
	}
	ctx := context.Background()
	canaryQuery := url.Values{"identifier": {"urn:oid:1.2.3|" + patientID}, "_lastUpdated": {"gt2024-01-01"}}

	f := newFake(t)
	f.staticToken = staticTok
	var otherURL string
	f.setHook(func(w http.ResponseWriter, r *http.Request) bool {
		q := r.URL.Query()
		switch {
		case r.URL.Path == "/fhir/Patient" && q.Get("scenario") == "503":
			writeJSON(w, http.StatusServiceUnavailable, outcome("transient", patientID))
		case r.URL.Path == "/fhir/Patient" && q.Get("scenario") == "400":
			writeJSON(w, http.StatusBadRequest, outcome("invalid", "unknown identifier "+patientID))
		case r.URL.Path == "/fhir/Patient" && q.Get("scenario") == "next500":
			writeJSON(w, http.StatusOK, []byte(`{"resourceType":"Bundle","type":"searchset","link":[{"relation":"next","url":"`+f.base+`?page=2&patient=`+patientID+`"}],"entry":[]}`))
		case r.URL.Path == "/fhir" && q.Get("page") == "2":
			writeJSON(w, http.StatusInternalServerError, outcome("exception", patientID))
		case r.URL.Path == "/fhir/Patient" && q.Get("scenario") == "foreignnext":
			writeJSON(w, http.StatusOK, []byte(`{"resourceType":"Bundle","type":"searchset","link":[{"relation":"next","url":"https://evil.example/fhir?patient=`+patientID+`"}]}`))
		case r.URL.Path == "/fhir/Patient" && q.Get("scenario") == "redirect":
			http.Redirect(w, r, otherURL+"/fhir/Patient?patient="+patientID, http.StatusFound)
		case r.URL.Path == "/fhir/Patient" && q.Get("scenario") == "drop":
			conn, _, _ := w.(http.Hijacker).Hijack()
			_ = conn.Close()
		case r.URL.Path == "/fhir/Patient" && q.Get("scenario") == "html":
			w.Header().Set("Content-Type", "text/html")
			_, _ = fmt.Fprintf(w, "<p>%s</p>", patientID)
		case r.URL.Path == "/fhir/Patient" && q.Get("scenario") == "notbundle":
			writeJSON(w, http.StatusOK, []byte(`{"resourceType":"Bundle","type":"`+patientID+`"}`))
		case r.URL.Path == "/fhir/Patient" && q.Get("scenario") == "badentry":
			writeJSON(w, http.StatusOK, []byte(`{"resourceType":"Bundle","type":"searchset","entry":[{"resource":"`+patientID+`"}]}`))
		default:
			return false
		}
		return true
	})
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		t.Error("the other host was contacted")
	}))
	defer other.Close()
	otherURL = other.URL

	c, _ := f.client(t, Options{Auth: StaticBearer{Token: staticTok}, Logger: logger})
	for _, sc := range []string{"503", "400", "next500", "foreignnext", "redirect", "drop", "html", "notbundle", "badentry"} {
		q := url.Values{"scenario": {sc}}
		for k, v := range canaryQuery {
			q[k] = v
		}
		collect(c.Search(ctx, "Patient", q))
	}
	collect(c.Search(ctx, "Patient", url.Values{"scenario": {"503"}, "identifier": {patientID}}))
	small, _ := f.client(t, Options{Auth: StaticBearer{Token: staticTok}, Logger: logger, MaxBodyBytes: 100})
	collect(small.Search(ctx, "Patient", canaryQuery))
	wrong, _ := f.client(t, Options{Auth: StaticBearer{Token: staticTok + "-wrong"}, Logger: logger})
	collect(wrong.Read(ctx, "Patient", "example"))

	// SMART: renewals after 401, a refusing server, and a hostile token
	// endpoint that echoes the assertion back in its error and its "token".
	rk, _ := testKeys()
	f.setHook(nil)
	smart := smartFor(t, f, "tidings", pkcs8PEM(t, rk))
	sc, _ := f.client(t, Options{Auth: smart, Logger: logger})
	if _, err := sc.Read(ctx, "Patient", "example"); err != nil {
		t.Fatal(err)
	}
	f.setHook(func(w http.ResponseWriter, r *http.Request) bool {
		writeJSON(w, http.StatusUnauthorized, outcome("login", r.Header.Get("Authorization")))
		return true
	})
	collect(sc.Search(ctx, "Patient", canaryQuery))

	var echoed []string
	for _, status := range []int{http.StatusBadRequest, http.StatusOK, http.StatusInternalServerError} {
		echo := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			_ = r.ParseForm()
			a := r.PostForm.Get("client_assertion")
			echoed = append(echoed, a)
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(status)
			if status == http.StatusOK {
				_, _ = fmt.Fprintf(w, `{"access_token":"%s bad","token_type":"%s"}`, a, a)
				return
			}
			_, _ = fmt.Fprintf(w, `{"error":"invalid_client","error_description":%q}`, a)
		}))
		bad := &SMARTBackend{TokenURL: echo.URL + "/token", ClientID: "tidings", KeyID: "k", Key: rk, Scopes: testScopes}
		bc, _ := f.client(t, Options{Auth: bad, Logger: logger})
		collect(bc.Read(ctx, "Patient", "example"))
		echo.Close()
	}

	secrets := []string{staticTok, patientID, url.QueryEscape(patientID)}
	secrets = append(secrets, f.assertions...)
	secrets = append(secrets, f.issued...)
	secrets = append(secrets, echoed...)
	if len(f.issued) < 2 || len(echoed) != 3 {
		t.Fatalf("scenarios did not run: %d tokens issued, %d assertions echoed", len(f.issued), len(echoed))
	}

	// Formatting and logging the auth values and options themselves.
	var shown strings.Builder
	for _, v := range []any{StaticBearer{Token: staticTok}, smart} {
		fmt.Fprintf(&shown, "%v %+v %#v %s %d\n", v, v, v, v, v)
	}
	logger.Info("config", "static", StaticBearer{Token: staticTok}, "smart", smart,
		"options", Options{BaseURL: f.base, Auth: StaticBearer{Token: staticTok}}, "client", c)

	for _, err := range errs {
		shown.WriteString(err.Error() + "\n")
	}
	shown.Write(logs.Bytes())
	if !strings.Contains(logs.String(), "fhir request retry") || !strings.Contains(logs.String(), `"status":503`) {
		t.Fatal("retries were not logged: the log check would prove nothing")
	}
	out := shown.String()
	for _, s := range secrets {
		if s != "" && strings.Contains(out, s) {
			t.Errorf("secret or query value leaked (len %d) into:\n%s", len(s), out)
			break
		}
	}
	// Errors still say what failed.
	if !strings.Contains(out, "GET /fhir/Patient: status 503") || !strings.Contains(out, "redirect to another host refused") {
		t.Errorf("errors lost their method/path/status:\n%s", out)
	}
}
