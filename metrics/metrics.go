package metrics

import (
	"context"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

const namespace = "tidings"

// Outcome is what became of a notification POSTed (or PUT) to a notify URL.
type Outcome int

// The outcomes of a notification.
const (
	Accepted     Outcome = iota // new events stored or fetches requested (202)
	Duplicate                   // every event seen before
	Ignored                     // no event of a resource type Tidings handles
	Recorded                    // a handshake or heartbeat, nothing to process
	Rejected                    // refused as invalid, too large, unsupported (4xx)
	Unauthorized                // a wrong or missing secret or signature (401, 403)
	Throttled                   // over the rate limit (429)
	Failed                      // not processed; the source retries (5xx)
	nOutcomes
)

var outcomeNames = [nOutcomes]string{"accepted", "duplicate", "ignored", "recorded", "rejected", "unauthorized", "throttled", "error"}

// EventSource is where a stored event came from.
type EventSource int

// The sources of events.
const (
	FromNotification EventSource = iota // carried by a notification
	FromFetch                           // read from the FHIR source (id-only notifications, gaps)
	nSources
)

var sourceNames = [nSources]string{"notification", "fetch"}

// EventResult is what the worker did with a claimed event.
type EventResult int

// The results of processing an event.
const (
	EventDone    EventResult = iota // processed, or failed for good
	EventRetry                      // failed; tried again later
	EventGivenUp                    // out of attempts
	nEventResults
)

var eventResultNames = [nEventResults]string{"done", "retry", "given_up"}

// The notice statuses counted, as package delivery names them, and
// "unknown" for a delivery whose outcome is unknown (the notice stays
// pending until an operator resolves it).
var noticeStatuses = [...]string{"sent", "denied", "failed", "skipped", "unknown"}

// The channels counted; any other name counts as "other".
var noticeChannels = [...]string{"email", "other"}

// DecisionResult is what a policy decision said.
type DecisionResult int

// The results of a policy decision.
const (
	Allow      DecisionResult = iota
	Deny                      // denied, or allowed with an obligation that cannot be met
	NoDecision                // the policy gave no decision (an error, no rule matched): fail closed
	nDecisionResults
)

var decisionNames = [nDecisionResults]string{"allow", "deny", "no_decision"}

// SMTPResult is how one message's hand-off to the relay ended.
type SMTPResult int

// The results of an SMTP send.
const (
	SMTPSent      SMTPResult = iota
	SMTPTemporary            // a 4xx answer, a network failure or timeout: retried
	SMTPRejected             // a 5xx answer: not retried
	SMTPNoTLS                // TLS was required and the relay did not offer it
	SMTPUnknown              // the message went out and no answer came: never retried
	SMTPError                // anything else (a message that could not be built)
	nSMTPResults
)

var smtpNames = [nSMTPResults]string{"sent", "temporary", "rejected", "no_tls", "unknown", "error"}

// FHIRResult is how one HTTP request to a FHIR source ended.
type FHIRResult int

// The results of a FHIR request.
const (
	FHIROK          FHIRResult = iota // 2xx
	FHIRClientError                   // 4xx
	FHIRServerError                   // 5xx (and anything else not 2xx or 4xx)
	FHIRNetwork                       // no response: connection, TLS, timeout
	nFHIRResults
)

var fhirNames = [nFHIRResults]string{"2xx", "4xx", "5xx", "network"}

// The request methods counted; any other counts as "other".
var fhirMethods = [...]string{"GET", "POST", "other"}

// SlotWait is how it ended for a request that found serve's in-flight
// bound (TIDINGS_MAX_IN_FLIGHT) full and waited for a slot.
type SlotWait int

// The ends of a wait for a slot.
const (
	SlotAdmitted SlotWait = iota // a slot freed within the wait
	SlotRefused                  // none did (or the client went): answered 429
	nSlotWaits
)

var slotWaitNames = [nSlotWaits]string{"admitted", "refused"}

// Queues lists the queues whose depth is sampled on scrape, as the Asynq
// inspector reports them: one QueueStat per queue.
type Queues func(ctx context.Context) ([]QueueStat, error)

// QueueStat is one queue's depth and lateness.
type QueueStat struct {
	Queue                                       string
	Pending, Active, Scheduled, Retry, Archived int
	// Latency is how long the oldest pending task has waited.
	Latency time.Duration
}

// AuditLag counts the audit rows not yet linked into their tenant's chain.
type AuditLag func(ctx context.Context) (int64, error)

// Metrics is one process's metrics and their registry.
type Metrics struct {
	reg *prometheus.Registry

	notifications   [nOutcomes]prometheus.Counter
	events          [nSources]prometheus.Counter
	eventsProcessed [nEventResults]prometheus.Counter
	notices         [len(noticeStatuses)][len(noticeChannels)]prometheus.Counter
	decisions       [nDecisionResults]prometheus.Counter
	decisionSeconds prometheus.Histogram
	smtpSends       [nSMTPResults]prometheus.Counter
	smtpSeconds     prometheus.Histogram
	fhirRequests    [len(fhirMethods)][nFHIRResults]prometheus.Counter
	fhirSeconds     [len(fhirMethods)]prometheus.Observer
	slotWaits       [nSlotWaits]prometheus.Counter
	sampled         *sampled
}

// New builds the metrics on a registry of their own, with the Go runtime's
// and the process's collectors.
func New() *Metrics {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	f := func(c prometheus.Collector) { reg.MustRegister(c) }
	m := &Metrics{reg: reg}

	notifications := prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: namespace, Name: "notifications_received_total",
		Help: "FHIR notifications received on the notify URLs, by outcome."}, []string{"outcome"})
	f(notifications)
	for i, name := range outcomeNames {
		m.notifications[i] = notifications.WithLabelValues(name)
	}
	events := prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: namespace, Name: "events_accepted_total",
		Help: "New events stored (duplicates not counted), by where they came from."}, []string{"source"})
	f(events)
	for i, name := range sourceNames {
		m.events[i] = events.WithLabelValues(name)
	}
	processed := prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: namespace, Name: "events_processed_total",
		Help: "Events the worker claimed and processed, by result."}, []string{"result"})
	f(processed)
	for i, name := range eventResultNames {
		m.eventsProcessed[i] = processed.WithLabelValues(name)
	}
	notices := prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: namespace, Name: "notices_total",
		Help: "Notices that reached an outcome, by status and channel (unknown: the delivery's outcome is unknown)."}, []string{"status", "channel"})
	f(notices)
	for i, st := range noticeStatuses {
		for j, ch := range noticeChannels {
			m.notices[i][j] = notices.WithLabelValues(st, ch)
		}
	}
	decisions := prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: namespace, Name: "policy_decisions_total",
		Help: "Policy decisions on notices, by result."}, []string{"result"})
	f(decisions)
	for i, name := range decisionNames {
		m.decisions[i] = decisions.WithLabelValues(name)
	}
	m.decisionSeconds = prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: namespace, Name: "policy_decision_seconds",
		Help:    "How long a policy decision on a notice took.",
		Buckets: []float64{.00005, .0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1}})
	f(m.decisionSeconds)
	smtp := prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: namespace, Name: "smtp_sends_total",
		Help: "Messages handed to the SMTP relay, by result; every result but sent is an error."}, []string{"result"})
	f(smtp)
	for i, name := range smtpNames {
		m.smtpSends[i] = smtp.WithLabelValues(name)
	}
	m.smtpSeconds = prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: namespace, Name: "smtp_send_seconds",
		Help:    "How long handing one message to the SMTP relay took, a session's dial included.",
		Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30}})
	f(m.smtpSeconds)
	fhirReq := prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: namespace, Name: "fhir_requests_total",
		Help: "HTTP requests to FHIR sources (each retry counts), by method and result."}, []string{"method", "result"})
	f(fhirReq)
	fhirSec := prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: namespace, Name: "fhir_request_seconds",
		Help:    "How long one HTTP request to a FHIR source took, until its headers arrived.",
		Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 15}}, []string{"method"})
	f(fhirSec)
	for i, meth := range fhirMethods {
		m.fhirSeconds[i] = fhirSec.WithLabelValues(meth)
		for j, res := range fhirNames {
			m.fhirRequests[i][j] = fhirReq.WithLabelValues(meth, res)
		}
	}
	slots := prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: namespace, Name: "http_slot_waits_total",
		Help: "Requests that found serve's in-flight bound (TIDINGS_MAX_IN_FLIGHT) full and waited for a slot, by outcome (refused: answered 429)."}, []string{"outcome"})
	f(slots)
	for i, name := range slotWaitNames {
		m.slotWaits[i] = slots.WithLabelValues(name)
	}
	m.sampled = &sampled{}
	f(m.sampled)
	return m
}

// Handler serves the exposition of the process's registry.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{Registry: m.reg, ErrorHandling: promhttp.ContinueOnError})
}

// Notification counts a notification's outcome.
func (m *Metrics) Notification(o Outcome) {
	if m != nil && o >= 0 && o < nOutcomes {
		m.notifications[o].Inc()
	}
}

// EventsAccepted counts n new events stored from a source.
func (m *Metrics) EventsAccepted(s EventSource, n int) {
	if m != nil && n > 0 && s >= 0 && s < nSources {
		m.events[s].Add(float64(n))
	}
}

// EventsProcessed counts n claimed events with a result.
func (m *Metrics) EventsProcessed(r EventResult, n int) {
	if m != nil && n > 0 && r >= 0 && r < nEventResults {
		m.eventsProcessed[r].Add(float64(n))
	}
}

// Notice counts a notice that reached status (delivery's NoticeSent,
// NoticeDenied, NoticeFailed, NoticeSkipped, or "unknown") on a channel.
// A status outside those is not counted.
func (m *Metrics) Notice(status, channel string) {
	if m == nil {
		return
	}
	i := indexOf(noticeStatuses[:], status)
	if i < 0 {
		return
	}
	j := indexOf(noticeChannels[:len(noticeChannels)-1], channel)
	if j < 0 {
		j = len(noticeChannels) - 1
	}
	m.notices[i][j].Inc()
}

// Decision counts a policy decision on a notice and how long it took.
func (m *Metrics) Decision(r DecisionResult, took time.Duration) {
	if m != nil && r >= 0 && r < nDecisionResults {
		m.decisions[r].Inc()
		m.decisionSeconds.Observe(took.Seconds())
	}
}

// SMTPSend counts one message's hand-off to the relay and how long it took.
func (m *Metrics) SMTPSend(r SMTPResult, took time.Duration) {
	if m != nil && r >= 0 && r < nSMTPResults {
		m.smtpSends[r].Inc()
		m.smtpSeconds.Observe(took.Seconds())
	}
}

// FHIRRequest counts one HTTP request to a FHIR source and how long it took.
func (m *Metrics) FHIRRequest(method string, r FHIRResult, took time.Duration) {
	if m == nil || r < 0 || r >= nFHIRResults {
		return
	}
	i := indexOf(fhirMethods[:len(fhirMethods)-1], method)
	if i < 0 {
		i = len(fhirMethods) - 1
	}
	m.fhirRequests[i][r].Inc()
	m.fhirSeconds[i].Observe(took.Seconds())
}

// SlotWaited counts a request that waited for an in-flight slot.
func (m *Metrics) SlotWaited(o SlotWait) {
	if m != nil && o >= 0 && o < nSlotWaits {
		m.slotWaits[o].Inc()
	}
}

// indexOf finds s in a short fixed list without allocating.
func indexOf(list []string, s string) int {
	for i, v := range list {
		if v == s {
			return i
		}
	}
	return -1
}
