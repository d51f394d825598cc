package e2e

import (
	"os"
	"slices"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"
)

// checkScript runs inside the container: layer 2's add and delete must
// show, and the rootfs must take a write.
const checkScript = `test -f /etc/added || { echo "E2E-FAIL /etc/added missing"; exit 11; }
test -e /etc/deleted-me && { echo "E2E-FAIL /etc/deleted-me still there"; exit 12; }
echo written > /strata-e2e || exit 13
read x < /strata-e2e
echo "E2E-RESULT added=yes deleted=gone wrote=$x"`

// TestContainerdRunAndGC imports a two-layer image through the proxy, runs a
// container on it, and checks that containerd's GC removes every snapshot
// from the proxy.
func TestContainerdRunAndGC(t *testing.T) { forEachBackend(t, testContainerdRunAndGC) }

func testContainerdRunAndGC(t *testing.T, backend string) {
	e := newEnvBackend(t, backend)

	// Import unpacked both layers through the proxy, as committed snapshots.
	ls := e.ctr("snapshots", "--snapshotter", snapshotter, "ls")
	t.Logf("ctr snapshots ls after import:\n%s", ls)
	if got := e.backendSnapshots(); len(got) != 2 || !strings.HasSuffix(got[0], "(Committed)") || !strings.HasSuffix(got[1], "(Committed)") {
		t.Fatalf("proxy holds %v after import, want 2 committed layers", got)
	}

	if backend == "fuse" {
		// a container that stays: its rootfs must be a FUSE mount
		e.ctr("run", "-d", "--null-io", "--snapshotter", snapshotter, "--fifo-dir", e.fifoDir, e.image, "fusecheck",
			"/bin/sh", "-c", "exec sleep 600")
		if fm := e.fuseMounts(); len(fm) != 1 {
			t.Errorf("fuse backend: want 1 FUSE mount under the proxy root while a container runs, got %v", fm)
		}
		e.killAndRemove("fusecheck")
	}
	out, err := e.runContainer(snapshotter, "check", "/bin/sh", "-c", checkScript)
	t.Logf("ctr run --rm output:\n%s", out)
	if err != nil {
		t.Fatalf("ctr run: %v", err)
	}
	if want := "E2E-RESULT added=yes deleted=gone wrote=written"; !contains(lines(out), want) {
		t.Fatalf("container printed %q, want the line %q", out, want)
	}
	t.Logf("proxy after ctr run --rm: %v", e.backendSnapshots())

	// A synchronous image delete runs containerd's GC to completion,
	// including the proxy's backend: every snapshot must go.
	e.ctr("images", "rm", "--sync", e.image)
	if out := lines(e.ctr("snapshots", "--snapshotter", snapshotter, "ls")); len(out) > 1 {
		t.Errorf("containerd still lists snapshots after GC: %v", out[1:])
	}
	if got := e.backendSnapshots(); len(got) != 0 {
		t.Errorf("proxy still holds %v after GC", got)
	}
	if left := mountsUnder(e.dir); len(left) > 0 {
		t.Errorf("mounts left after the container ended: %v", left)
	}
	if left := e.fuseServers(); len(left) > 0 {
		t.Errorf("FUSE servers left after GC: %v", left)
	}
}

// TestProxyRestart kills the proxy while a container runs, restarts it, and
// checks that the container keeps its rootfs and new containers start.
func TestProxyRestart(t *testing.T) { forEachBackend(t, testProxyRestart) }

func testProxyRestart(t *testing.T, backend string) {
	e := newEnvBackend(t, backend)
	e.ctr("run", "-d", "--null-io", "--snapshotter", snapshotter, "--fifo-dir", e.fifoDir, e.image, "sleeper",
		"/bin/sh", "-c", "echo alive > /alive; exec sleep 600")
	exec := func(id string, cmd ...string) (string, error) {
		args := append([]string{"tasks", "exec", "--exec-id", id, "--fifo-dir", e.fifoDir, "sleeper"}, cmd...)
		return e.ctrErr(cmdTimeout, args...)
	}
	waitFor(t, "the sleeper writing /alive", 20*time.Second, func() error {
		out, err := exec("wait-alive", "cat", "/alive")
		if err == nil && strings.TrimSpace(out) != "alive" {
			err = errorf("cat /alive = %q", out)
		}
		return err
	})

	servers := e.fuseServers()
	if backend == "fuse" {
		t.Logf("FUSE servers before the proxy is killed: %v", servers)
		if len(servers) == 0 {
			t.Errorf("fuse backend: no FUSE server serves the running container")
		}
	}
	e.stopProxy(syscall.SIGKILL)
	if got := e.fuseServers(); !slices.Equal(got, servers) {
		t.Errorf("FUSE servers changed when the proxy was killed: %v, were %v", got, servers)
	}
	if _, err := os.Lstat(e.proxySock); err != nil {
		t.Logf("killed proxy left no socket: %v", err)
	} else {
		t.Logf("killed proxy left its socket %s behind (stale)", e.proxySock)
	}
	if _, err := e.ctrErr(cmdTimeout, "snapshots", "--snapshotter", snapshotter, "ls"); err == nil {
		t.Errorf("ctr snapshots ls succeeded with the proxy dead")
	}
	out, err := exec("while-down", "/bin/sh", "-c", "cat /alive; test -f /etc/added && echo added-visible")
	if err != nil || !contains(lines(out), "alive") || !contains(lines(out), "added-visible") {
		t.Errorf("running container with proxy down: %v\n%s", err, out)
	}

	start := time.Now()
	e.startProxy()
	var reconnect time.Duration
	waitFor(t, "containerd reconnecting to the restarted proxy", 30*time.Second, func() error {
		_, err := e.ctrErr(cmdTimeout, "snapshots", "--snapshotter", snapshotter, "ls")
		reconnect = time.Since(start)
		return err
	})
	t.Logf("containerd answered through the restarted proxy %v after its start", reconnect.Round(time.Millisecond))

	if got := e.fuseServers(); !slices.Equal(got, servers) {
		t.Errorf("FUSE servers changed over the proxy restart: %v, were %v (a live one must be kept)", got, servers)
	}
	out, err = exec("after-restart", "/bin/sh", "-c", "cat /alive; echo more > /more; cat /more")
	if err != nil || !contains(lines(out), "alive") || !contains(lines(out), "more") {
		t.Errorf("running container after proxy restart: %v\n%s", err, out)
	}
	out, err = e.runContainer(snapshotter, "after-restart", "/bin/sh", "-c", checkScript)
	t.Logf("new container after restart:\n%s", out)
	if err != nil || !contains(lines(out), "E2E-RESULT added=yes deleted=gone wrote=written") {
		t.Errorf("new container after proxy restart: %v\n%s", err, out)
	}

	e.ctr("tasks", "kill", "-s", "SIGKILL", "sleeper")
	waitFor(t, "the sleeper to stop", 20*time.Second, func() error {
		out, err := e.ctrErr(cmdTimeout, "tasks", "ls")
		if err == nil && strings.Contains(out, "RUNNING") {
			err = errorf("still running: %s", out)
		}
		return err
	})
	e.ctr("tasks", "delete", "sleeper")
	e.ctr("containers", "rm", "sleeper")
	e.ctr("images", "rm", "--sync", e.image)
	if got := e.backendSnapshots(); len(got) != 0 {
		t.Errorf("proxy still holds %v after GC", got)
	}
	if left := mountsUnder(e.dir); len(left) > 0 {
		t.Errorf("mounts left: %v", left)
	}
	if left := e.fuseServers(); len(left) > 0 {
		t.Errorf("FUSE servers left after GC: %v", left)
	}
}

// TestRunTiming times `ctr run --rm IMAGE ID true` through the proxy and
// through containerd's built-in overlayfs snapshotter, alternating, and
// logs medians. It reports; it asserts nothing about time.
func TestRunTiming(t *testing.T) {
	if os.Getenv(envBench) != "1" {
		t.Skipf("timing run: set %s=1 (and %s=1) to run it", envBench, envE2E)
	}
	forEachBackend(t, testRunTiming)
}

func testRunTiming(t *testing.T, backend string) {
	const runs = 20
	e := newEnvBackend(t, backend)
	e.importImage("overlayfs")
	times := map[string][]time.Duration{}
	for i := 0; i < runs; i++ {
		for _, sn := range []string{snapshotter, "overlayfs"} {
			start := time.Now()
			out, err := e.runContainer(sn, "timing", "true")
			d := time.Since(start)
			if err != nil {
				t.Fatalf("run %d on %s: %v\n%s", i, sn, err, out)
			}
			times[sn] = append(times[sn], d)
		}
	}
	mp, mo := median(times[snapshotter]), median(times["overlayfs"])
	t.Logf("ctr run --rm true, %d runs each, alternating:", runs)
	for _, sn := range []string{snapshotter, "overlayfs"} {
		ds := sorted(times[sn])
		t.Logf("  %-9s median %v  min %v  max %v", sn, median(ds).Round(time.Millisecond), ds[0].Round(time.Millisecond), ds[len(ds)-1].Round(time.Millisecond))
	}
	t.Logf("  ratio proxy/overlayfs (medians) %.3f", float64(mp)/float64(mo))
	if m := e.proxyMetrics(); len(m) > 0 {
		t.Logf("proxy metrics (import + %d runs):\n%s", runs, strings.Join(m, "\n"))
	}
}

func sorted(ds []time.Duration) []time.Duration {
	c := append([]time.Duration(nil), ds...)
	sort.Slice(c, func(i, j int) bool { return c[i] < c[j] })
	return c
}

func median(ds []time.Duration) time.Duration {
	c := sorted(ds)
	n := len(c)
	if n%2 == 1 {
		return c[n/2]
	}
	return (c[n/2-1] + c[n/2]) / 2
}

// waitFor retries f every 200ms until it succeeds or timeout passes.
func waitFor(t *testing.T, what string, timeout time.Duration, f func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("waiting for %s: gave up after %v: %v", what, timeout, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}
