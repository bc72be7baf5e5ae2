package engine

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/wsbridge/wsbridge/bridge"
)

// Metrics are wsbridge's Prometheus series (the README's metrics table). Labelled series
// are resolved once at construction, so the hot path only adds to atomics.
type Metrics struct {
	Registry *prometheus.Registry

	connections prometheus.Gauge
	maxConns    prometheus.Gauge
	opened      prometheus.Counter
	closed      [numCloseReasons]prometheus.Counter
	refused     [numRefuseReasons]prometheus.Counter
	messagesIn  prometheus.Counter
	messagesOut prometheus.Counter
	backend     [len(bridge.Methods)]map[bridge.Outcome]prometheus.Counter
	backendDur  [len(bridge.Methods)]prometheus.Observer
	added       prometheus.Observer
	pushes      map[string]prometheus.Counter
	trims       prometheus.Counter

	// Channels (channel.go).
	chanSubs       prometheus.Gauge
	chanPublishes  prometheus.Counter
	chanDeliveries prometheus.Counter
	chanDrops      prometheus.Counter
	chanRejected   [numChanRejects]prometheus.Counter
}

// Push outcomes, the label of wsbridge_pushes_total.
const (
	pushOK           = "ok"
	pushUnknown      = "unknown"       // 404: no open connection with that ClientId
	pushTooBig       = "too_big"       // 413
	pushSlowConsumer = "slow_consumer" // 503: the client's outbound buffer is full
	pushBadRequest   = "bad_request"   // 400: text push that is not valid UTF-8
)

// NewMetrics creates the series on a new registry, with the Go and process
// collectors.
func NewMetrics() *Metrics {
	r := prometheus.NewRegistry()
	r.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	f := func(c prometheus.Collector) prometheus.Collector { r.MustRegister(c); return c }
	m := &Metrics{Registry: r}
	m.connections = f(prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "wsbridge_connections", Help: "Open WebSocket connections.",
	})).(prometheus.Gauge)
	m.maxConns = f(prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "wsbridge_max_conns", Help: "The -max-conns limit (0 = none), to alert on wsbridge_connections / wsbridge_max_conns.",
	})).(prometheus.Gauge)
	m.opened = f(prometheus.NewCounter(prometheus.CounterOpts{
		Name: "wsbridge_connections_opened_total", Help: "WebSocket connections opened (101 sent).",
	})).(prometheus.Counter)
	closed := f(prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "wsbridge_connections_closed_total", Help: "Open WebSocket connections closed, by reason.",
	}, []string{"reason"})).(*prometheus.CounterVec)
	for r := range numCloseReasons {
		m.closed[r] = closed.WithLabelValues(r.String())
	}
	refused := f(prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "wsbridge_upgrades_refused_total", Help: "Upgrade requests answered without 101, by reason.",
	}, []string{"reason"})).(*prometheus.CounterVec)
	for r := range numRefuseReasons {
		m.refused[r] = refused.WithLabelValues(r.String())
	}
	msgs := f(prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "wsbridge_messages_total", Help: "WebSocket messages: in from clients, out to clients (replies and pushes).",
	}, []string{"direction"})).(*prometheus.CounterVec)
	m.messagesIn, m.messagesOut = msgs.WithLabelValues("in"), msgs.WithLabelValues("out")
	reqs := f(prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "wsbridge_backend_requests_total", Help: "Backend calls by method and outcome (each DELETE retry counts).",
	}, []string{"method", "outcome"})).(*prometheus.CounterVec)
	dur := f(prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "wsbridge_backend_request_duration_seconds",
		Help:    "Backend call latency.",
		Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60},
	}, []string{"method"})).(*prometheus.HistogramVec)
	for _, meth := range bridge.Methods {
		m.backend[meth] = make(map[bridge.Outcome]prometheus.Counter, len(bridge.Outcomes))
		for _, o := range bridge.Outcomes {
			m.backend[meth][o] = reqs.WithLabelValues(meth.String(), string(o))
		}
		m.backendDur[meth] = dur.WithLabelValues(meth.String())
	}
	m.added = f(prometheus.NewHistogram(prometheus.HistogramOpts{
		Name: "wsbridge_message_added_latency_seconds",
		Help: "Latency wsbridge itself adds to a message that gets a reply: from the message read whole (or from its " +
			"predecessor's answer, if it had to wait for it) to the reply written, minus the backend call.",
		Buckets: []float64{.00005, .0001, .00025, .0005, .001, .002, .003, .004, .005, .0075, .01, .025, .05, .1, .25, 1},
	})).(prometheus.Histogram)
	pushes := f(prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "wsbridge_pushes_total", Help: "Admin API pushes by outcome.",
	}, []string{"outcome"})).(*prometheus.CounterVec)
	m.pushes = map[string]prometheus.Counter{}
	for _, o := range []string{pushOK, pushUnknown, pushTooBig, pushSlowConsumer, pushBadRequest} {
		m.pushes[o] = pushes.WithLabelValues(o)
	}
	f(prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "wsbridge_meta_rejected_total", Help: "Wsbridge-Set-Meta-* reply headers ignored: a bad name or value, or past 16 names / 1 KiB per connection.",
	}, func() float64 { return float64(bridge.MetaRejected()) }))
	m.trims = f(prometheus.NewCounter(prometheus.CounterOpts{
		Name: "wsbridge_memory_trims_total", Help: "Times the heap grown by a burst was collected and returned to the OS once the bridge was quiet (-trim-memory).",
	})).(prometheus.Counter)
	m.chanSubs = f(prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "wsbridge_channel_subscriptions", Help: "Channel subscriptions held by this node's connections (a connection in two channels counts twice).",
	})).(prometheus.Gauge)
	m.chanPublishes = f(prometheus.NewCounter(prometheus.CounterOpts{
		Name: "wsbridge_channel_publishes_total", Help: "Messages published to a channel on this node (admin POST /channel/<ch>).",
	})).(prometheus.Counter)
	m.chanDeliveries = f(prometheus.NewCounter(prometheus.CounterOpts{
		Name: "wsbridge_channel_deliveries_total", Help: "Channel messages written to a subscriber.",
	})).(prometheus.Counter)
	m.chanDrops = f(prometheus.NewCounter(prometheus.CounterOpts{
		Name: "wsbridge_channel_drops_total", Help: "Channel messages not delivered because the subscriber could not keep up (it is closed with 1013).",
	})).(prometheus.Counter)
	rejected := f(prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "wsbridge_channel_rejected_total", Help: "Subscriptions refused, by reason: a bad channel name, or past -max-channels.",
	}, []string{"reason"})).(*prometheus.CounterVec)
	for r := range numChanRejects {
		m.chanRejected[r] = rejected.WithLabelValues(r.String())
	}
	return m
}

// WatchBackend registers the series that read c's state at each scrape:
// whether the backend is up (circuit closed), the stuck calls and their
// bound, and the idle sockets the backend was found to have closed.
func (m *Metrics) WatchBackend(c *bridge.Client) {
	up := func() float64 {
		if c.Shedding() {
			return 0
		}
		return 1
	}
	m.Registry.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "wsbridge_backend_up",
			Help: "1 while the backend circuit is closed; 0 while it is open (upgrades get 503, the backend is probed until it answers).",
		}, up),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "wsbridge_backend_stuck_calls",
			Help: "Backend calls in flight for longer than -backend-stuck-after; up to -backend-stuck-conns of them hold a socket above -backend-max-conns.",
		}, func() float64 { return float64(c.Stuck()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "wsbridge_backend_max_stuck",
			Help: "The -backend-stuck-conns bound, to alert on wsbridge_backend_stuck_calls / wsbridge_backend_max_stuck.",
		}, func() float64 { return float64(c.MaxStuck()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "wsbridge_backend_stale_conns_total",
			Help: "Idle backend sockets found closed by the backend (restart, keep-alive timeout); the call went out on a new one.",
		}, func() float64 { return float64(c.StaleConns()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "wsbridge_backend_sockets_limit",
			Help: "How many backend sockets may carry calls that are not stuck: -backend-max-conns, or with -backend-adapt what the backend was found to use.",
		}, func() float64 { return float64(c.SocketLimit()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "wsbridge_backend_pipeline_depth",
			Help: "How many calls one backend socket may carry at once: -backend-pipeline, or with -backend-adapt what the backend's speed allows (1 = no pipelining).",
		}, func() float64 { return float64(c.Depth()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "wsbridge_backend_pipelined_calls_total",
			Help: "Backend calls sent pipelined, in a batch of two or more on one socket.",
		}, func() float64 { return float64(c.Pipelined()) }),
	)
}

// MemoryTrimmed counts one trim (wsbridge_memory_trims_total).
func (m *Metrics) MemoryTrimmed() { m.trims.Inc() }

// ObserveBackend is the bridge.Config.Observe hook.
func (m *Metrics) ObserveBackend(meth bridge.Method, o bridge.Outcome, d time.Duration) {
	if c := m.backend[meth][o]; c != nil {
		c.Inc()
	}
	if o != bridge.OutcomeShed {
		m.backendDur[meth].Observe(d.Seconds())
	}
}
