// Package proxy serves a containerd snapshotter over containerd's snapshots
// gRPC API on a unix socket, so that containerd can use it as a proxy
// plugin:
//
//	[proxy_plugins.strata]
//	  type = "snapshot"
//	  address = "/run/strata/strata.sock"
//
// It sits at the edge of strata: it imports containerd, the core packages do
// not. Serve owns the socket and the gRPC server; the snapshotter it is given
// owns everything else (the store, mounts, metadata). Serve never closes the
// snapshotter: the caller opened it and the caller closes it, after Serve
// returned.
//
// Stopping. Serve stops when ctx is done or one of the stop signals (SIGTERM
// and SIGINT unless WithStopSignals says otherwise) arrives. It then stops
// accepting connections, lets the calls already in flight finish for up to
// the grace period (WithGracePeriod, default 10s), and cuts off whatever is
// left; in that last case it returns an error that matches ErrStopTimeout.
// A stop containerd sees as a lost connection: its proxy client redials on
// the next call, so a restarted server is picked up within a few seconds and
// running containers keep their mounts (the kernel holds them, not us).
//
// Metrics. With WithMetricsAddress, Serve also serves Prometheus metrics on
// http://ADDRESS/metrics: strata_snapshot_operations_total{operation,code}
// and strata_snapshot_operation_duration_seconds{operation}, where
// operation is the API method (Prepare, View, Mounts, Commit, Remove, Stat,
// Update, List, Usage, Cleanup) and code the gRPC status code.
package proxy

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	snapshotsapi "github.com/containerd/containerd/api/services/snapshots/v1"
	"github.com/containerd/containerd/v2/contrib/snapshotservice"
	"github.com/containerd/containerd/v2/core/snapshots"
	"google.golang.org/grpc"
)

// Sentinel errors; match them with errors.Is.
var (
	// ErrAddressInUse: a live server already answers on the socket.
	ErrAddressInUse = errors.New("address already in use")
	// ErrNotSocket: the address exists and is not a unix socket, so Serve
	// refuses to remove it.
	ErrNotSocket = errors.New("address exists and is not a socket")
	// ErrStopTimeout: calls were still in flight when the grace period
	// ended and were cut off.
	ErrStopTimeout = errors.New("graceful stop timed out")
)

// DefaultGracePeriod bounds how long a stop waits for in-flight calls.
const DefaultGracePeriod = 10 * time.Second

// socketMode is the permission of the socket: root and the socket's group.
const socketMode fs.FileMode = 0o660

// Option configures Serve.
type Option func(*config)

type config struct {
	metricsAddress string
	grace          time.Duration
	signals        []os.Signal
	logger         *slog.Logger
}

// WithMetricsAddress serves Prometheus metrics over HTTP on addr
// ("host:port", as net.Listen("tcp", addr) takes it) at /metrics.
func WithMetricsAddress(addr string) Option {
	return func(c *config) { c.metricsAddress = addr }
}

// WithGracePeriod bounds how long a stop waits for in-flight calls before
// cutting them off. d <= 0 cuts them off at once.
func WithGracePeriod(d time.Duration) Option {
	return func(c *config) { c.grace = d }
}

// WithStopSignals replaces the signals that stop Serve (default SIGTERM and
// SIGINT). With no signals, only ctx stops it.
func WithStopSignals(sigs ...os.Signal) Option {
	return func(c *config) { c.signals = sigs }
}

// WithLogger sets where Serve logs its start, stop and failures (default
// slog.Default()).
func WithLogger(l *slog.Logger) Option {
	return func(c *config) { c.logger = l }
}

// Serve serves sn over containerd's snapshots gRPC API on the unix socket at
// address until ctx is done or a stop signal arrives (see the package
// comment). It creates the socket's parent directory if missing (0711, as
// containerd does for /run/containerd), replaces a stale socket left by a
// dead server, refuses to replace a live one (ErrAddressInUse) or anything
// that is not a socket (ErrNotSocket), and removes the socket when it
// returns. A requested stop returns nil, or an
// error matching ErrStopTimeout if in-flight calls had to be cut off.
func Serve(ctx context.Context, sn snapshots.Snapshotter, address string, opts ...Option) error {
	cfg := config{
		grace:   DefaultGracePeriod,
		signals: []os.Signal{syscall.SIGTERM, os.Interrupt},
		logger:  slog.Default(),
	}
	for _, o := range opts {
		o(&cfg)
	}
	if !filepath.IsAbs(address) {
		abs, err := filepath.Abs(address)
		if err != nil {
			return fmt.Errorf("serve %q: %w", address, err)
		}
		address = abs
	}

	// Catch stop signals before the socket exists: a client that can
	// connect can also expect a signal to stop us gracefully.
	stop := make(chan os.Signal, 1)
	if len(cfg.signals) > 0 {
		signal.Notify(stop, cfg.signals...)
		defer signal.Stop(stop)
	}

	l, err := listen(address)
	if err != nil {
		return fmt.Errorf("serve %q: %w", address, err)
	}

	m := newMetrics()
	srv := grpc.NewServer(
		grpc.ChainUnaryInterceptor(m.unary),
		grpc.ChainStreamInterceptor(m.stream),
	)
	snapshotsapi.RegisterSnapshotsServer(srv, snapshotservice.FromSnapshotter(sn))

	var metricsSrv *http.Server
	metricsErr := make(chan error, 1)
	if cfg.metricsAddress != "" {
		ml, err := net.Listen("tcp", cfg.metricsAddress)
		if err != nil {
			_ = l.Close() // the listen error is the one to report
			return fmt.Errorf("serve metrics %q: %w", cfg.metricsAddress, err)
		}
		metricsSrv = &http.Server{Handler: m.handler(), ReadHeaderTimeout: 10 * time.Second}
		go func() { metricsErr <- metricsSrv.Serve(ml) }()
		cfg.logger.Info("serving metrics", "address", ml.Addr().String())
	}

	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(l) }()
	cfg.logger.Info("serving snapshots", "address", address)

	var why string
	select {
	case err := <-serveErr:
		// Serve failed on its own: nothing is in flight worth waiting for.
		srv.Stop()
		shutdownMetrics(metricsSrv)
		return fmt.Errorf("serve %q: %w", address, err)
	case err := <-metricsErr:
		srv.Stop()
		return fmt.Errorf("serve metrics %q: %w", cfg.metricsAddress, err)
	case <-ctx.Done():
		why = "context done"
	case s := <-stop:
		why = "signal " + s.String()
	}
	cfg.logger.Info("stopping", "address", address, "reason", why, "grace", cfg.grace)

	err = gracefulStop(srv, cfg.grace)
	if !errors.Is(err, errHandlersStuck) {
		<-serveErr //nolint:errcheck // nil after (Graceful)Stop: an earlier error ended the select above
	}
	shutdownMetrics(metricsSrv)
	if err != nil {
		cfg.logger.Warn("in-flight calls cut off", "address", address, "grace", cfg.grace)
		return fmt.Errorf("serve %q: %w", address, err)
	}
	cfg.logger.Info("stopped", "address", address)
	return nil
}

// stuckBound is how long a forced stop waits for handlers that ignore their
// cancelled context before Serve gives up on them and returns anyway.
const stuckBound = 2 * time.Second

// errHandlersStuck wraps ErrStopTimeout when handlers still run after Stop.
var errHandlersStuck = fmt.Errorf("handlers still running %v after forced stop: %w", stuckBound, ErrStopTimeout)

// gracefulStop stops srv, waiting up to grace for in-flight calls, then
// cancels them, then waits up to stuckBound for their handlers to return
// (grpc's Stop waits for handlers, and a handler may ignore its context).
func gracefulStop(srv *grpc.Server, grace time.Duration) error {
	done := make(chan struct{})
	go func() {
		srv.GracefulStop()
		close(done)
	}()
	t := time.NewTimer(grace)
	defer t.Stop()
	select {
	case <-done:
		return nil
	case <-t.C:
	}
	go srv.Stop() // cancels in-flight calls; also ends the GracefulStop above
	select {
	case <-done:
		return fmt.Errorf("after %v: %w", grace, ErrStopTimeout)
	case <-time.After(stuckBound):
		return errHandlersStuck
	}
}

func shutdownMetrics(s *http.Server) {
	if s == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if s.Shutdown(ctx) != nil {
		_ = s.Close() // cut off what the grace did not finish
	}
}

// listen creates address's parent dir, clears a stale socket and listens
// with mode socketMode. The returned listener unlinks the socket on Close.
func listen(address string) (net.Listener, error) {
	if err := os.MkdirAll(filepath.Dir(address), 0o711); err != nil {
		return nil, err
	}
	if err := removeStale(address); err != nil {
		return nil, err
	}
	l, err := net.Listen("unix", address)
	if err != nil {
		return nil, err
	}
	if err := os.Chmod(address, socketMode); err != nil {
		_ = l.Close() // the chmod error is the one to report
		return nil, err
	}
	return l, nil
}

// removeStale removes address if it is a socket nobody answers on.
func removeStale(address string) error {
	fi, err := os.Lstat(address)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if fi.Mode().Type() != fs.ModeSocket {
		return fmt.Errorf("%s: %w", fi.Mode().Type(), ErrNotSocket)
	}
	c, err := net.DialTimeout("unix", address, time.Second)
	if err == nil {
		_ = c.Close() // a probe: someone answered
		return ErrAddressInUse
	}
	if err := os.Remove(address); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}
