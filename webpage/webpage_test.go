package webpage

import (
	"html/template"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/gin-gonic/gin"
)

func TestWrite(t *testing.T) {
	gin.SetMode(gin.ReleaseMode)
	ok := template.Must(template.New("ok").Parse(`<p>{{.}}</p>`))
	broken := template.Must(template.New("broken").Parse(`<p>{{.Missing}}</p>`))

	rec := httptest.NewRecorder()
	c, _ := gin.CreateTestContext(rec)
	if err := Write(c, http.StatusNotFound, ok, "<gone>", "img-src 'self'"); err != nil {
		t.Fatal(err)
	}
	if rec.Code != http.StatusNotFound || rec.Body.String() != "<p>&lt;gone&gt;</p>" {
		t.Errorf("answer %d %q", rec.Code, rec.Body)
	}
	want := map[string]string{"Cache-Control": "no-store", "Referrer-Policy": "no-referrer", "X-Content-Type-Options": "nosniff",
		"X-Frame-Options": "DENY", "Content-Type": "text/html; charset=utf-8"}
	for k, v := range want {
		if got := rec.Header().Get(k); got != v {
			t.Errorf("%s = %q, want %q", k, got, v)
		}
	}
	if csp := rec.Header().Get("Content-Security-Policy"); !strings.HasPrefix(csp, "default-src 'none';") || !strings.HasSuffix(csp, "; img-src 'self'") || !strings.Contains(csp, "frame-ancestors 'none'") {
		t.Errorf("CSP %q", csp)
	}

	rec = httptest.NewRecorder()
	c, _ = gin.CreateTestContext(rec)
	if err := Write(c, http.StatusOK, broken, 42); err == nil {
		t.Error("a failing template returned no error")
	}
	if rec.Code != http.StatusInternalServerError || rec.Body.String() != "Internal error" {
		t.Errorf("failing template answered %d %q", rec.Code, rec.Body)
	}
}
