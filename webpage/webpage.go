// Package webpage writes the HTML pages people open in a browser (the
// portal's notice pickup, the console, the unsubscribe and tracking
// links), all with the same protective headers: never cached, no
// referrer, no sniffing, no framing, and a content security policy that
// allows nothing but inline styles and forms posting back to Tidings.
package webpage

import (
	"bytes"
	"html/template"
	"net/http"
	"strings"

	"github.com/gin-gonic/gin"
)

// baseCSP is every page's content security policy before its extras.
const baseCSP = "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"

// Write renders t with data and answers status with it. A template that
// fails answers 500 with a plain message instead, and the error is
// returned for the caller to log (template errors name fields, never
// data). extraCSP adds directives, such as "img-src 'self'".
func Write(c *gin.Context, status int, t *template.Template, data any, extraCSP ...string) error {
	var b bytes.Buffer
	err := t.Execute(&b, data)
	if err != nil {
		status, b = http.StatusInternalServerError, *bytes.NewBufferString("Internal error")
	}
	h := c.Writer.Header()
	h.Set("Cache-Control", "no-store")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Content-Security-Policy", strings.Join(append([]string{baseCSP}, extraCSP...), "; "))
	c.Data(status, "text/html; charset=utf-8", b.Bytes())
	return err
}
