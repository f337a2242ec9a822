package devicegrant

import (
	"context"
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/devicegrant/devicegrant/store"
)

// metrics are the server's Prometheus collectors. They always exist, so
// code can count without checking; they are exported only when
// Config.Metrics is set.
type metrics struct {
	delivered *prometheus.CounterVec
	failures  *prometheus.CounterVec
	parked    *prometheus.CounterVec
	jobs      *prometheus.CounterVec
	instances prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer, st store.Store) (*metrics, error) {
	m := &metrics{
		delivered: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "devicegrant_outbox_delivered_total", Help: "Homeserver calls delivered, by call.",
		}, []string{"call"}),
		failures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "devicegrant_outbox_failures_total", Help: "Failed attempts at homeserver calls, by call.",
		}, []string{"call"}),
		parked: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "devicegrant_outbox_parked_total", Help: "Homeserver calls set aside after repeated refusals, by call.",
		}, []string{"call"}),
		jobs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "devicegrant_jobs_total",
			Help: "Background jobs this instance ran (outcome ran) or left to the instance holding the job's lease (outcome held_elsewhere), by job.",
		}, []string{"job", "outcome"}),
		instances: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "devicegrant_instances", Help: "Instances sharing the database, alive lately, among which this one divides every rate limit.",
		}),
	}
	m.instances.Set(1)
	if reg == nil {
		return m, nil
	}
	waiting := outboxGauge{st: st,
		pending: prometheus.NewDesc("devicegrant_outbox_pending", "Homeserver calls waiting to be delivered (parked ones included).", nil, nil),
		parked:  prometheus.NewDesc("devicegrant_outbox_parked", "Homeserver calls set aside after repeated refusals, by call.", []string{"call"}, nil),
		oldest:  prometheus.NewDesc("devicegrant_outbox_oldest_seconds", "Age of the oldest waiting homeserver call.", nil, nil),
	}
	for _, c := range []prometheus.Collector{m.delivered, m.failures, m.parked, m.jobs, m.instances, waiting} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("devicegrant: metrics: %w", err)
		}
	}
	return m, nil
}

// outboxGauge reads the outbox when scraped.
type outboxGauge struct {
	st                      store.Reader
	pending, parked, oldest *prometheus.Desc
}

func (g outboxGauge) Describe(ch chan<- *prometheus.Desc) {
	ch <- g.pending
	ch <- g.parked
	ch <- g.oldest
}

func (g outboxGauge) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	entries, err := g.st.Outbox(ctx, 100_000)
	if err != nil {
		ch <- prometheus.NewInvalidMetric(g.pending, err)
		return
	}
	// The deletes are reported even when none is parked, so that an alert
	// on devicegrant_outbox_parked{call="delete_device"} > 0 has a series
	// from the start.
	parked := map[string]int{callDeleteDevice: 0, callDeleteUser: 0}
	oldest := 0.0
	for i, e := range entries {
		if !e.ParkedAt.IsZero() {
			parked[e.Call]++
		}
		if i == 0 {
			oldest = time.Since(e.CreatedAt).Seconds()
		}
	}
	ch <- prometheus.MustNewConstMetric(g.pending, prometheus.GaugeValue, float64(len(entries)))
	for call, n := range parked {
		ch <- prometheus.MustNewConstMetric(g.parked, prometheus.GaugeValue, float64(n), call)
	}
	ch <- prometheus.MustNewConstMetric(g.oldest, prometheus.GaugeValue, oldest)
}
