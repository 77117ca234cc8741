package metrics

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// sampleTimeout bounds a sampled metric's read on each scrape.
const sampleTimeout = 2 * time.Second

var (
	queueTasksDesc = prometheus.NewDesc(namespace+"_queue_tasks",
		"Tasks in an Asynq queue, by queue and state, sampled on scrape.", []string{"queue", "state"}, nil)
	queueLatencyDesc = prometheus.NewDesc(namespace+"_queue_latency_seconds",
		"How long the oldest pending task of an Asynq queue has waited, sampled on scrape.", []string{"queue"}, nil)
	auditLagDesc = prometheus.NewDesc(namespace+"_audit_unchained_rows",
		"Audit rows not yet linked into their tenant's chain, sampled on scrape.", nil, nil)
	collectErrorsDesc = prometheus.NewDesc(namespace+"_metrics_collect_errors_total",
		"Scrapes on which a sampled metric could not be read (its series are then left out), by metric.", []string{"metric"}, nil)
)

// SampleQueues reports the named queues' depth and lateness on each
// scrape. Only those names become label values; a queue the inspector
// does not know yet (nothing was ever enqueued on it) reports zero.
func (m *Metrics) SampleQueues(names []string, read Queues) {
	if m == nil {
		return
	}
	m.sampled.mu.Lock()
	defer m.sampled.mu.Unlock()
	m.sampled.queueNames, m.sampled.queues = append([]string(nil), names...), read
}

// SampleAuditLag reports the audit rows not yet chained on each scrape.
func (m *Metrics) SampleAuditLag(read AuditLag) {
	if m == nil {
		return
	}
	m.sampled.mu.Lock()
	defer m.sampled.mu.Unlock()
	m.sampled.auditLag = read
}

// sampled reads, on each scrape, what is cheaper to ask for than to keep
// up to date, and counts the reads that failed (in the same collection, so
// a scrape that misses a series also shows why).
type sampled struct {
	mu         sync.Mutex
	queueNames []string
	queues     Queues
	auditLag   AuditLag
	queueErrs  atomic.Int64
	auditErrs  atomic.Int64
}

func (c *sampled) Describe(ch chan<- *prometheus.Desc) {
	ch <- queueTasksDesc
	ch <- queueLatencyDesc
	ch <- auditLagDesc
	ch <- collectErrorsDesc
}

func (c *sampled) Collect(ch chan<- prometheus.Metric) {
	c.mu.Lock()
	names, queues, auditLag := c.queueNames, c.queues, c.auditLag
	c.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), sampleTimeout)
	defer cancel()
	if queues != nil {
		c.collectQueues(ctx, ch, names, queues)
		ch <- prometheus.MustNewConstMetric(collectErrorsDesc, prometheus.CounterValue, float64(c.queueErrs.Load()), "queue")
	}
	if auditLag != nil {
		if n, err := auditLag(ctx); err != nil {
			c.auditErrs.Add(1)
		} else {
			ch <- prometheus.MustNewConstMetric(auditLagDesc, prometheus.GaugeValue, float64(n))
		}
		ch <- prometheus.MustNewConstMetric(collectErrorsDesc, prometheus.CounterValue, float64(c.auditErrs.Load()), "audit_lag")
	}
}

func (c *sampled) collectQueues(ctx context.Context, ch chan<- prometheus.Metric, names []string, read Queues) {
	stats, err := read(ctx)
	if err != nil {
		c.queueErrs.Add(1)
		return
	}
	byName := make(map[string]QueueStat, len(stats))
	for _, s := range stats {
		byName[s.Queue] = s
	}
	for _, q := range names {
		s := byName[q]
		for _, st := range []struct {
			state string
			n     int
		}{{"pending", s.Pending}, {"active", s.Active}, {"scheduled", s.Scheduled}, {"retry", s.Retry}, {"archived", s.Archived}} {
			ch <- prometheus.MustNewConstMetric(queueTasksDesc, prometheus.GaugeValue, float64(st.n), q, st.state)
		}
		ch <- prometheus.MustNewConstMetric(queueLatencyDesc, prometheus.GaugeValue, s.Latency.Seconds(), q)
	}
}
