package proxy

import (
	"context"
	"net/http"
	"path"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/status"
)

// metrics counts and times every snapshots API call. Each Serve has its own
// registry, so several servers in one process (tests) do not collide.
type metrics struct {
	reg      *prometheus.Registry
	calls    *prometheus.CounterVec
	duration *prometheus.HistogramVec
}

func newMetrics() *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		calls: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "strata",
			Subsystem: "snapshot",
			Name:      "operations_total",
			Help:      "Snapshots API calls served, by operation and gRPC status code.",
		}, []string{"operation", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "strata",
			Subsystem: "snapshot",
			Name:      "operation_duration_seconds",
			Help:      "Latency of snapshots API calls, by operation.",
			// 100µs .. ~26s: Stat is sub-millisecond, Commit of a big
			// layer or Remove of a big tree takes seconds.
			Buckets: prometheus.ExponentialBuckets(0.0001, 4, 10),
		}, []string{"operation"}),
	}
	m.reg.MustRegister(m.calls, m.duration)
	return m
}

func (m *metrics) observe(fullMethod string, start time.Time, err error) {
	op := path.Base(fullMethod) // "/containerd.services.snapshots.v1.Snapshots/Prepare" -> "Prepare"
	m.calls.WithLabelValues(op, status.Code(err).String()).Inc()
	m.duration.WithLabelValues(op).Observe(time.Since(start).Seconds())
}

func (m *metrics) unary(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	start := time.Now()
	resp, err := h(ctx, req)
	m.observe(info.FullMethod, start, err)
	return resp, err
}

func (m *metrics) stream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
	start := time.Now()
	err := h(srv, ss)
	m.observe(info.FullMethod, start, err)
	return err
}

func (m *metrics) handler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{}))
	return mux
}
