// Package metricstest reads a Prometheus text exposition for tests: a
// series' value, and every label's distinct values.
package metricstest

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/tidings-health/tidings/metrics"
)

// Exposition is one parsed scrape.
type Exposition struct {
	Raw      []byte
	Families map[string]*dto.MetricFamily
}

// Scrape GETs url (with a bearer token unless "") and parses the answer,
// which must be 200.
func Scrape(t testing.TB, url, token string) Exposition {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %d %s", url, resp.StatusCode, body)
	}
	return Parse(t, body)
}

// Of reads m's exposition through its handler.
func Of(t testing.TB, m *metrics.Metrics) Exposition {
	t.Helper()
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	if rec.Code != http.StatusOK {
		t.Fatalf("metrics handler: %d %s", rec.Code, rec.Body)
	}
	return Parse(t, rec.Body.Bytes())
}

// Parse parses a text exposition.
func Parse(t testing.TB, body []byte) Exposition {
	t.Helper()
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(bytes.NewReader(body))
	if err != nil {
		t.Fatalf("unparseable exposition: %v\n%s", err, body)
	}
	return Exposition{Raw: body, Families: fams}
}

// Value is the value of the series of family name whose labels include
// every pair of labels ("outcome", "accepted", ...): a counter's or
// gauge's value, a histogram's count, summed over every matching series.
// found is false when no series matches.
func (e Exposition) Value(name string, labels ...string) (v float64, found bool) {
	fam, ok := e.Families[name]
	if !ok {
		return 0, false
	}
next:
	for _, m := range fam.GetMetric() {
		for i := 0; i+1 < len(labels); i += 2 {
			if !hasLabel(m, labels[i], labels[i+1]) {
				continue next
			}
		}
		found = true
		switch {
		case m.Counter != nil:
			v += m.GetCounter().GetValue()
		case m.Gauge != nil:
			v += m.GetGauge().GetValue()
		case m.Histogram != nil:
			v += float64(m.GetHistogram().GetSampleCount())
		case m.Summary != nil:
			v += float64(m.GetSummary().GetSampleCount())
		case m.Untyped != nil:
			v += m.GetUntyped().GetValue()
		}
	}
	return v, found
}

// Get is Value for a series that must exist.
func (e Exposition) Get(t testing.TB, name string, labels ...string) float64 {
	t.Helper()
	v, ok := e.Value(name, labels...)
	if !ok {
		t.Fatalf("no series %s%v in the exposition", name, labels)
	}
	return v
}

// LabelValues gives, for each family and label name ("family/label"), the
// distinct values seen.
func (e Exposition) LabelValues() map[string]map[string]bool {
	out := map[string]map[string]bool{}
	for name, fam := range e.Families {
		for _, m := range fam.GetMetric() {
			for _, lp := range m.GetLabel() {
				k := name + "/" + lp.GetName()
				if out[k] == nil {
					out[k] = map[string]bool{}
				}
				out[k][lp.GetValue()] = true
			}
		}
	}
	return out
}

func hasLabel(m *dto.Metric, name, value string) bool {
	for _, lp := range m.GetLabel() {
		if lp.GetName() == name {
			return lp.GetValue() == value
		}
	}
	return false
}
