package http

import (
	"context"
	"net/http"
	"runtime"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/keyledger/keyledger/domain"
	"github.com/keyledger/keyledger/events"
)

// metrics is what /metrics exports. Label values are route patterns,
// methods, status codes, verification codes and event types: never a
// secret, a key id or an org id.
type metrics struct {
	reg      *prometheus.Registry
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
	verified map[string]prometheus.Counter

	// The request counter and histogram of each method, route and status,
	// looked up once: label hashing on every request costs more than the
	// verification it counts. Read without a lock.
	byRoute sync.Map // routeLabels → routeMetrics
}

type routeLabels struct {
	method, route string
	status        int
}

type routeMetrics struct {
	count prometheus.Counter
	took  prometheus.Observer
}

// latencyBuckets run from 100µs (a verification) to 10s (a write that
// waits on a failover), in seconds.
var latencyBuckets = []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}

func (s *Server) newMetrics() *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "keyledger_http_requests_total",
			Help: "HTTP requests answered, by method, route pattern and status code.",
		}, []string{"method", "route", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "keyledger_http_request_duration_seconds",
			Help:    "Time from a request's arrival to the end of its answer, by method and route pattern.",
			Buckets: latencyBuckets,
		}, []string{"method", "route"}),
		verified: map[string]prometheus.Counter{},
	}
	verifications := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "keyledger_verifications_total",
		Help: "Verifications answered by POST /v1/verify, by result code.",
	}, []string{"result"})
	for _, code := range []string{domain.VerifyValid, domain.VerifyMalformed, domain.VerifyNotFound, domain.VerifyRevoked, domain.VerifyExpired} {
		m.verified[code] = verifications.WithLabelValues(code)
	}
	buildInfo := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "keyledger_build_info",
		Help: "Always 1; the labels name the build.",
	}, []string{"version", "goversion"})
	buildInfo.WithLabelValues(s.Version, runtime.Version()).Set(1)
	m.reg.MustRegister(
		m.requests, m.duration, verifications, buildInfo,
		&stateCollector{s: s},
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	return m
}

// handler serves /metrics. It takes no credential and no slot of the
// in-flight bound, so it bounds itself: two scrapes at once, ten seconds
// each.
func (m *metrics) handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{MaxRequestsInFlight: 2, Timeout: 10 * time.Second})
}

// observe counts one answered request.
func (m *metrics) observe(method, route string, status int, took time.Duration) {
	l := routeLabels{method: metricMethod(method), route: route, status: status}
	if l.route == "" {
		l.route = "unmatched"
	}
	v, ok := m.byRoute.Load(l)
	if !ok {
		v, _ = m.byRoute.LoadOrStore(l, routeMetrics{
			count: m.requests.WithLabelValues(l.method, l.route, strconv.Itoa(status)),
			took:  m.duration.WithLabelValues(l.method, l.route),
		})
	}
	rm := v.(routeMetrics)
	rm.count.Inc()
	rm.took.Observe(took.Seconds())
}

// verification counts one verification's result code.
func (m *metrics) verification(code string) {
	if c, ok := m.verified[code]; ok {
		c.Inc()
	}
}

// metricMethod keeps the method label to the methods HTTP defines, so that
// a client cannot grow the label set.
func metricMethod(m string) string {
	switch m {
	case http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch,
		http.MethodDelete, http.MethodOptions, http.MethodConnect, http.MethodTrace:
		return m
	}
	return "OTHER"
}

// stateCollector reads the state of the event store and the projections
// when /metrics is scraped.
type stateCollector struct {
	s *Server

	mu      sync.Mutex
	lastSeq uint64    // the stream's last sequence when last read
	readAt  time.Time // when: scrapes within a second share one read
}

var (
	descAppended = prometheus.NewDesc("keyledger_events_appended_total",
		"Events this instance appended to the stream, by type.", []string{"type"}, nil)
	descConflicts = prometheus.NewDesc("keyledger_append_conflicts_total",
		"Appends refused because the key changed since it was read (optimistic concurrency).", nil, nil)
	descRetries = prometheus.NewDesc("keyledger_append_retries_total",
		"Appends sent again: after a conflict, on the key's new state, or after a lost acknowledgement.", nil, nil)
	descApplied = prometheus.NewDesc("keyledger_projection_applied_seq",
		"The last stream sequence applied to this instance's projections.", nil, nil)
	descStreamSeq = prometheus.NewDesc("keyledger_stream_last_seq",
		"The stream's last sequence, as last read from NATS.", nil, nil)
	descLag = prometheus.NewDesc("keyledger_projection_lag_events",
		"The stream's last sequence minus the last one applied to the projections.", nil, nil)
	descReady = prometheus.NewDesc("keyledger_projection_ready",
		"1 once the projections have caught up with the stream as it was at start.", nil, nil)
	descStarting = prometheus.NewDesc("keyledger_starting",
		"1 while the instance is starting (waiting for NATS, the JetStream leader, the stream or a bucket: /readyz says which); 0 once it serves.", nil, nil)
	descStreamOK = prometheus.NewDesc("keyledger_stream_ok",
		"1 while the stream is the one this instance applied; 0 once it was deleted, replaced or truncated under it (/readyz says which; a restart is needed).", nil, nil)
	descConnected = prometheus.NewDesc("keyledger_nats_connected",
		"1 while the event store (NATS) is reachable, 0 while it is not.", nil, nil)
	descSnapshotAge = prometheus.NewDesc("keyledger_snapshot_age_seconds",
		"Age of the newest snapshot of the projections this instance saved or started from.", nil, nil)
	descSnapshotSeq = prometheus.NewDesc("keyledger_snapshot_seq",
		"Stream sequence of the newest snapshot this instance saved or started from.", nil, nil)
	descRejected = prometheus.NewDesc("keyledger_events_rejected_total",
		"Events in the stream that no trusted keyledger instance wrote (forged or unsigned), refused by this instance's projections.", nil, nil)
	descWebhookDeliveries = prometheus.NewDesc("keyledger_webhook_deliveries_total",
		"Webhook delivery attempts this instance made, by result (succeeded, failed, gave_up, disabled, refused); no URL or endpoint in a label.", []string{"result"}, nil)
	descUsageFlushed = prometheus.NewDesc("keyledger_usage_flushed_total",
		"Key uses this instance has shared with the others.", nil, nil)
	descUsageFlushSeconds = prometheus.NewDesc("keyledger_usage_flush_seconds",
		"How long this instance's last flush of key uses took.", nil, nil)
	descUsageCarried = prometheus.NewDesc("keyledger_usage_carried_uses",
		"Key uses the last flush left for the next one (over its bound, or failed): above 0, sharing falls behind.", nil, nil)
	descUsageCarriedTotal = prometheus.NewDesc("keyledger_usage_carried_total",
		"Key uses left for a next flush, summed over flushes.", nil, nil)
	descConsumers = prometheus.NewDesc("keyledger_nats_consumers_created_total",
		"JetStream consumers this instance asked NATS to create (the projection feed and its resets, webhook deliveries; reads of the history create none).", nil, nil)
	descCheckpointsRejected = prometheus.NewDesc("keyledger_checkpoints_rejected_total",
		"Messages on the checkpoint subject that no trusted keyledger instance wrote, skipped by this instance's checkpointer.", nil, nil)
)

func (c *stateCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descAppended, descConflicts, descRetries, descApplied, descStreamSeq, descLag, descReady, descStarting, descStreamOK, descConnected, descSnapshotAge, descSnapshotSeq, descRejected, descCheckpointsRejected, descWebhookDeliveries,
		descUsageFlushed, descUsageFlushSeconds, descUsageCarried, descUsageCarriedTotal, descConsumers} {
		ch <- d
	}
}

func (c *stateCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.s
	if st, ok := s.Keys.Store.(interface{ Stats() events.AppendStats }); ok {
		stats := st.Stats()
		for t, n := range stats.Appended {
			ch <- prometheus.MustNewConstMetric(descAppended, prometheus.CounterValue, float64(n), string(t))
		}
		ch <- prometheus.MustNewConstMetric(descConflicts, prometheus.CounterValue, float64(stats.Conflicts))
		ch <- prometheus.MustNewConstMetric(descRetries, prometheus.CounterValue, float64(stats.Retries))
	}

	applied := s.Runner.Applied()
	ch <- prometheus.MustNewConstMetric(descApplied, prometheus.GaugeValue, float64(applied))
	ch <- prometheus.MustNewConstMetric(descRejected, prometheus.CounterValue, float64(s.Runner.Rejected()))
	if s.Checkpoints != nil {
		ch <- prometheus.MustNewConstMetric(descCheckpointsRejected, prometheus.CounterValue, float64(s.Checkpoints.Rejected()))
	}
	if s.ConsumersCreated != nil {
		ch <- prometheus.MustNewConstMetric(descConsumers, prometheus.CounterValue, float64(s.ConsumersCreated()))
	}
	ch <- prometheus.MustNewConstMetric(descReady, prometheus.GaugeValue, boolValue(s.Runner.Ready()))
	ch <- prometheus.MustNewConstMetric(descStarting, prometheus.GaugeValue, 0)
	ch <- prometheus.MustNewConstMetric(descStreamOK, prometheus.GaugeValue, boolValue(s.Runner.Broken() == ""))
	if s.Usage != nil {
		u := s.Usage.Stats()
		ch <- prometheus.MustNewConstMetric(descUsageFlushed, prometheus.CounterValue, float64(u.Flushed))
		ch <- prometheus.MustNewConstMetric(descUsageFlushSeconds, prometheus.GaugeValue, u.LastTook.Seconds())
		ch <- prometheus.MustNewConstMetric(descUsageCarried, prometheus.GaugeValue, float64(u.LastCarried))
		ch <- prometheus.MustNewConstMetric(descUsageCarriedTotal, prometheus.CounterValue, float64(u.Carried))
	}
	if s.Webhooks != nil {
		for result, n := range s.Webhooks.Counts() {
			ch <- prometheus.MustNewConstMetric(descWebhookDeliveries, prometheus.CounterValue, float64(n), result)
		}
	}
	last := c.streamLastSeq(applied)
	ch <- prometheus.MustNewConstMetric(descStreamSeq, prometheus.GaugeValue, float64(last))
	ch <- prometheus.MustNewConstMetric(descLag, prometheus.GaugeValue, float64(last-min(last, applied)))
	ch <- prometheus.MustNewConstMetric(descConnected, prometheus.GaugeValue, boolValue(s.Unreachable == nil || s.Unreachable().IsZero()))

	if s.Snapshots != nil {
		if seq, taken, ok := s.Snapshots.Newest(); ok {
			ch <- prometheus.MustNewConstMetric(descSnapshotAge, prometheus.GaugeValue, s.Now().Sub(taken).Seconds())
			ch <- prometheus.MustNewConstMetric(descSnapshotSeq, prometheus.GaugeValue, float64(seq))
		}
	}
}

// streamLastSeq asks NATS for the stream's last sequence, briefly and at
// most once a second; while it cannot be reached the last answer stands,
// so that the lag keeps growing as the projections fall behind what was
// last seen.
func (c *stateCollector) streamLastSeq(applied uint64) uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	if time.Since(c.readAt) >= time.Second {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		last, err := c.s.Runner.StreamLastSeq(ctx)
		cancel()
		c.readAt = time.Now()
		if err == nil {
			c.lastSeq = last
		}
	}
	return max(c.lastSeq, applied)
}

func boolValue(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
