package proxy_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	snapshotsapi "github.com/containerd/containerd/api/services/snapshots/v1"
	"github.com/containerd/containerd/v2/core/mount"
	"github.com/containerd/containerd/v2/core/snapshots"
	snproxy "github.com/containerd/containerd/v2/core/snapshots/proxy"
	"github.com/containerd/containerd/v2/plugins/snapshots/overlay"
	"github.com/containerd/errdefs"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/stratafs/strata/internal/testutil"
	"github.com/stratafs/strata/snapshot/proxy"
)

// server runs Serve in the background; stop cancels it and returns its error.
type server struct {
	addr   string
	cancel context.CancelFunc
	done   chan struct{} // closed when Serve returned
	err    error         // Serve's result, set before done is closed
}

func (s *server) stop(t *testing.T) error {
	t.Helper()
	s.cancel()
	select {
	case <-s.done:
		return s.err
	case <-time.After(30 * time.Second):
		t.Fatal("Serve did not return 30s after cancel")
		return nil
	}
}

func quiet() *slog.Logger { return slog.New(slog.DiscardHandler) }

// start serves sn on a socket under a temp dir and waits until it answers.
func start(t *testing.T, sn snapshots.Snapshotter, opts ...proxy.Option) *server {
	t.Helper()
	addr := filepath.Join(t.TempDir(), "run", "strata.sock") // parent created by Serve
	ctx, cancel := context.WithCancel(context.Background())
	s := &server{addr: addr, cancel: cancel, done: make(chan struct{})}
	opts = append([]proxy.Option{proxy.WithStopSignals(), proxy.WithLogger(quiet())}, opts...)
	go func() {
		s.err = proxy.Serve(ctx, sn, addr, opts...)
		close(s.done)
	}()
	t.Cleanup(func() {
		cancel()
		<-s.done
	})
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.Dial("unix", addr)
		if err == nil {
			c.Close()
			return s
		}
		select {
		case <-s.done:
			t.Fatalf("Serve returned early: %v", s.err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("socket %s never answered: %v", addr, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// client returns containerd's own proxy client, as the daemon uses it.
func client(t *testing.T, addr string) snapshots.Snapshotter {
	t.Helper()
	conn, err := grpc.NewClient("unix://"+addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return snproxy.NewSnapshotter(snapshotsapi.NewSnapshotsClient(conn), "strata")
}

func overlaySnapshotter(t *testing.T) snapshots.Snapshotter {
	t.Helper()
	testutil.RequireOverlay(t)
	sn, err := overlay.NewSnapshotter(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sn.Close() })
	return sn
}

func TestRoundTrip(t *testing.T) {
	sn := overlaySnapshotter(t)
	metricsAddr := freePort(t)
	srv := start(t, sn, proxy.WithMetricsAddress(metricsAddr))
	fi, err := os.Stat(srv.addr)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o660 || fi.Mode().Type() != os.ModeSocket {
		t.Errorf("socket mode %v, want socket 0660", fi.Mode())
	}
	c := client(t, srv.addr)
	ctx := context.Background()

	// Layer 1: prepare, write through a real mount, commit.
	ms, err := c.Prepare(ctx, "extract-1", "")
	if err != nil {
		t.Fatalf("prepare: %v", err)
	}
	assertAbsolute(t, ms)
	writeThrough(t, ms, "hello", "layer1")
	if err := c.Commit(ctx, "layer-1", "extract-1", snapshots.WithLabels(map[string]string{"l": "v"})); err != nil {
		t.Fatalf("commit: %v", err)
	}
	info, err := c.Stat(ctx, "layer-1")
	if err != nil || info.Kind != snapshots.KindCommitted || info.Labels["l"] != "v" {
		t.Fatalf("stat layer-1 = %+v, %v", info, err)
	}

	// Active child: Mounts must return what Prepare returned, and the
	// child must see the parent's file.
	pm, err := c.Prepare(ctx, "ctr", "layer-1")
	if err != nil {
		t.Fatalf("prepare child: %v", err)
	}
	mm, err := c.Mounts(ctx, "ctr")
	if err != nil {
		t.Fatalf("mounts: %v", err)
	}
	if len(pm) != len(mm) || pm[0].Type != mm[0].Type || strings.Join(pm[0].Options, ",") != strings.Join(mm[0].Options, ",") {
		t.Errorf("Mounts %+v differs from Prepare %+v", mm, pm)
	}
	assertAbsolute(t, mm)
	if got := readThrough(t, mm, "hello"); got != "layer1" {
		t.Errorf("child reads %q, want layer1", got)
	}

	var keys []string
	if err := c.Walk(ctx, func(_ context.Context, i snapshots.Info) error {
		keys = append(keys, i.Name)
		return nil
	}); err != nil {
		t.Fatalf("walk: %v", err)
	}
	if len(keys) != 2 {
		t.Errorf("walk = %v, want 2 snapshots", keys)
	}

	// Errors keep their class across the wire.
	if _, err := c.Stat(ctx, "nope"); !errdefs.IsNotFound(err) {
		t.Errorf("stat missing: %v, want not found", err)
	}
	if err := c.Remove(ctx, "layer-1"); !errdefs.IsFailedPrecondition(err) {
		t.Errorf("remove parent with child: %v, want failed precondition", err)
	}
	if err := c.Remove(ctx, "ctr"); err != nil {
		t.Fatalf("remove ctr: %v", err)
	}
	if err := c.Remove(ctx, "layer-1"); err != nil {
		t.Fatalf("remove layer-1: %v", err)
	}
	if err := c.Walk(ctx, func(_ context.Context, i snapshots.Info) error {
		t.Errorf("left after remove: %s", i.Name)
		return nil
	}); err != nil {
		t.Fatal(err)
	}

	body := get(t, "http://"+metricsAddr+"/metrics")
	for _, want := range []string{
		`strata_snapshot_operations_total{code="OK",operation="Prepare"} 2`,
		`strata_snapshot_operations_total{code="OK",operation="Commit"} 1`,
		`strata_snapshot_operations_total{code="NotFound",operation="Stat"} 1`,
		`strata_snapshot_operations_total{code="FailedPrecondition",operation="Remove"} 1`,
		`strata_snapshot_operations_total{code="OK",operation="List"} 2`,
		`strata_snapshot_operation_duration_seconds_count{operation="Remove"} 3`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("metrics lack %q:\n%s", want, body)
		}
	}

	if err := srv.stop(t); err != nil {
		t.Fatalf("Serve: %v", err)
	}
	if _, err := os.Lstat(srv.addr); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("socket left after stop: %v", err)
	}
}

// blocking holds Stat calls until release is closed.
type blocking struct {
	snapshots.Snapshotter
	entered chan struct{}
	release chan struct{}
}

func (b *blocking) Stat(ctx context.Context, key string) (snapshots.Info, error) {
	b.entered <- struct{}{}
	select {
	case <-b.release:
	case <-ctx.Done():
		return snapshots.Info{}, ctx.Err()
	}
	return b.Snapshotter.Stat(ctx, key)
}

func newBlocking(t *testing.T) *blocking {
	b := &blocking{Snapshotter: overlaySnapshotter(t), entered: make(chan struct{}, 1), release: make(chan struct{})}
	if _, err := b.Prepare(context.Background(), "k", ""); err != nil {
		t.Fatal(err)
	}
	return b
}

func TestGracefulStopFinishesInFlight(t *testing.T) {
	b := newBlocking(t)
	srv := start(t, b, proxy.WithGracePeriod(time.Minute))
	c := client(t, srv.addr)

	callErr := make(chan error, 1)
	go func() {
		_, err := c.Stat(context.Background(), "k")
		callErr <- err
	}()
	<-b.entered
	srv.cancel()

	// Stopping: no new connections, but Serve waits for the call.
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.Dial("unix", srv.addr)
		if err != nil {
			break
		}
		c.Close()
		if time.Now().After(deadline) {
			t.Fatal("still accepting connections 10s after stop")
		}
		time.Sleep(10 * time.Millisecond)
	}
	select {
	case <-srv.done:
		t.Fatalf("Serve returned with a call in flight: %v", srv.err)
	case <-time.After(100 * time.Millisecond):
	}

	close(b.release)
	if err := <-callErr; err != nil {
		t.Errorf("in-flight call: %v, want success", err)
	}
	if err := srv.stop(t); err != nil {
		t.Errorf("Serve: %v, want nil", err)
	}
}

func TestStopCutsOffAfterGrace(t *testing.T) {
	b := newBlocking(t)
	t.Cleanup(func() { close(b.release) })
	srv := start(t, b, proxy.WithGracePeriod(50*time.Millisecond))
	c := client(t, srv.addr)

	callErr := make(chan error, 1)
	go func() {
		_, err := c.Stat(context.Background(), "k")
		callErr <- err
	}()
	<-b.entered
	if err := srv.stop(t); !errors.Is(err, proxy.ErrStopTimeout) {
		t.Errorf("Serve: %v, want ErrStopTimeout", err)
	}
	if err := <-callErr; status.Code(err) != codes.Unavailable && !errdefs.IsUnavailable(err) {
		t.Errorf("cut-off call: %v, want unavailable", err)
	}
}

func TestSocketSafety(t *testing.T) {
	sn := overlaySnapshotter(t)
	ctx := context.Background()
	opts := []proxy.Option{proxy.WithStopSignals(), proxy.WithLogger(quiet())}

	// A live server's socket is not stolen.
	srv := start(t, sn)
	if err := proxy.Serve(ctx, sn, srv.addr, opts...); !errors.Is(err, proxy.ErrAddressInUse) {
		t.Errorf("second Serve on live socket: %v, want ErrAddressInUse", err)
	}
	if _, err := client(t, srv.addr).Stat(ctx, "x"); !errdefs.IsNotFound(err) {
		t.Errorf("first server disturbed: %v", err)
	}

	// A regular file is not removed.
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, []byte("keep"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := proxy.Serve(ctx, sn, file, opts...); !errors.Is(err, proxy.ErrNotSocket) {
		t.Errorf("Serve on a file: %v, want ErrNotSocket", err)
	}

	// A stale socket (nobody listening) is replaced.
	stale := filepath.Join(t.TempDir(), "stale.sock")
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: stale, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	l.SetUnlinkOnClose(false)
	l.Close()
	cctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- proxy.Serve(cctx, sn, stale, opts...) }()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := client(t, stale).Stat(ctx, "x"); errdefs.IsNotFound(err) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("server on stale socket never answered")
		}
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Serve on stale socket: %v", err)
	}
}

func assertAbsolute(t *testing.T, ms []mount.Mount) {
	t.Helper()
	for _, m := range ms {
		if m.Source != "" && m.Type == "bind" && !filepath.IsAbs(m.Source) {
			t.Errorf("relative source %q", m.Source)
		}
		for _, o := range m.Options {
			k, v, ok := strings.Cut(o, "=")
			if !ok || (k != "lowerdir" && k != "upperdir" && k != "workdir") {
				continue
			}
			for _, p := range strings.Split(v, ":") {
				if !filepath.IsAbs(p) {
					t.Errorf("relative %s %q", k, p)
				}
			}
		}
	}
}

func withMount(t *testing.T, ms []mount.Mount, f func(dir string)) {
	t.Helper()
	dir := t.TempDir()
	if err := mount.All(ms, dir); err != nil {
		t.Fatalf("mount %+v: %v", ms, err)
	}
	defer func() {
		if err := mount.UnmountAll(dir, 0); err != nil {
			t.Errorf("unmount %s: %v", dir, err)
		}
	}()
	f(dir)
}

func writeThrough(t *testing.T, ms []mount.Mount, name, data string) {
	t.Helper()
	withMount(t, ms, func(dir string) {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	})
}

func readThrough(t *testing.T, ms []mount.Mount, name string) string {
	t.Helper()
	var s string
	withMount(t, ms, func(dir string) {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		s = string(b)
	})
	return s
}

func freePort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

func get(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// stuck ignores its context: grpc's Stop waits for handlers, so Serve must
// give up on it rather than hang.
type stuck struct {
	snapshots.Snapshotter
	entered chan struct{}
	release chan struct{}
}

func (s *stuck) Stat(ctx context.Context, key string) (snapshots.Info, error) {
	s.entered <- struct{}{}
	<-s.release
	return snapshots.Info{}, errdefs.ErrUnavailable
}

func TestStopGivesUpOnStuckHandler(t *testing.T) {
	s := &stuck{Snapshotter: overlaySnapshotter(t), entered: make(chan struct{}, 1), release: make(chan struct{})}
	t.Cleanup(func() { close(s.release) })
	srv := start(t, s, proxy.WithGracePeriod(10*time.Millisecond))
	c := client(t, srv.addr)
	go c.Stat(context.Background(), "k")
	<-s.entered
	if err := srv.stop(t); !errors.Is(err, proxy.ErrStopTimeout) {
		t.Errorf("Serve: %v, want ErrStopTimeout", err)
	}
}

func TestStopSignal(t *testing.T) {
	sn := overlaySnapshotter(t)
	// SIGUSR1, not SIGTERM: the test binary must not die if it slipped by.
	srv := start(t, sn, proxy.WithStopSignals(syscall.SIGUSR1))
	if err := syscall.Kill(os.Getpid(), syscall.SIGUSR1); err != nil {
		t.Fatal(err)
	}
	select {
	case <-srv.done:
		if srv.err != nil {
			t.Errorf("Serve after signal: %v, want nil", srv.err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Serve ignored its stop signal")
	}
}
