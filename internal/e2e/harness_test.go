package e2e

import (
	"archive/tar"
	"bufio"
	"compress/gzip"
	"context"
	"debug/elf"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	snapshotsapi "github.com/containerd/containerd/api/services/snapshots/v1"
	"github.com/containerd/containerd/v2/core/snapshots"
	snproxy "github.com/containerd/containerd/v2/core/snapshots/proxy"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/stratafs/strata/internal/testutil"
)

const (
	// Environment knobs; see the package comment.
	envE2E   = "STRATA_E2E"
	envBench = "STRATA_E2E_BENCH"
	envProxy = "STRATA_E2E_PROXY"
	// envBackends lists the backends a {backend} template runs with
	// (comma-separated; default "kernel,fuse").
	envBackends = "STRATA_E2E_BACKENDS"

	snapshotter = "strata"          // the proxy plugin's name in config.toml
	imageBase   = "strata.test/e2e" // --base-name for ctr images import

	cmdTimeout    = 60 * time.Second // any single external command
	startTimeout  = 20 * time.Second // proxy or containerd becoming ready
	stopTimeout   = 15 * time.Second // a process exiting after a signal
	runContainerd = "/run/containerd"
)

// namespace is the containerd namespace of every test object; unique per
// test process, so runc's state dir /run/containerd/runc/<namespace> is ours
// alone even when other containerd daemons run on the machine.
var namespace = fmt.Sprintf("strata-e2e-%d", os.Getpid())

// requireE2E skips unless STRATA_E2E=1, then needs root, overlayfs and the
// tools (skip, or fail under STRATA_REQUIRE_MOUNT=1).
func requireE2E(t *testing.T) {
	t.Helper()
	if os.Getenv(envE2E) != "1" {
		t.Skipf("containerd end-to-end test: set %s=1 to run it (needs root, containerd, runc, umoci, busybox-static; see internal/e2e/setup.sh)", envE2E)
	}
	testutil.RequireOverlay(t)
	for _, tool := range []string{"containerd", "ctr", "runc", "containerd-shim-runc-v2", "umoci", "busybox"} {
		if _, err := exec.LookPath(tool); err != nil {
			testutil.Unavailable(t, fmt.Sprintf("%s not found in PATH (run internal/e2e/setup.sh): %v", tool, err))
		}
	}
}

// env is one containerd daemon talking to one proxy, all under dir.
type env struct {
	t           *testing.T
	backend     string // {backend} of the proxy template ("" without one)
	dir         string // temp dir holding everything below
	proxyArgv   []string
	proxyRoot   string
	proxySock   string
	proxyLog    string
	metricsAddr string // host:port offered to the proxy as {metrics}
	proxy       *exec.Cmd
	proxyDone   chan error
	ctrdSock    string
	ctrdLog     string
	containerd  *exec.Cmd
	ctrdDone    chan error
	fifoDir     string
	imageTar    string
	image       string // name after import
}

// backends returns the {backend} values to run each test with: nil when
// the proxy template has no {backend} (one run), else STRATA_E2E_BACKENDS
// or kernel and fuse.
func backends() []string {
	if !strings.Contains(os.Getenv(envProxy), "{backend}") {
		return nil
	}
	if v := os.Getenv(envBackends); v != "" {
		return strings.Split(v, ",")
	}
	return []string{"kernel", "fuse"}
}

// forEachBackend runs f once per backend (as subtests named after them),
// or once directly when the template has no {backend}.
func forEachBackend(t *testing.T, f func(t *testing.T, backend string)) {
	bs := backends()
	if bs == nil {
		f(t, "")
		return
	}
	for _, b := range bs {
		t.Run(b, func(t *testing.T) { f(t, b) })
	}
}

// newEnvBackend is newEnv with the proxy's {backend} set to backend.
func newEnvBackend(t *testing.T, backend string) *env {
	t.Helper()
	requireE2E(t)
	guardRunContainerd(t)

	dir, err := os.MkdirTemp("", "strata-e2e-")
	if err != nil {
		t.Fatal(err)
	}
	e := &env{
		t:         t,
		backend:   backend,
		dir:       dir,
		proxyRoot: filepath.Join(dir, "proxy-root"),
		proxySock: filepath.Join(dir, "run", "strata.sock"),
		proxyLog:  filepath.Join(dir, "proxy.log"),
		ctrdSock:  filepath.Join(dir, "containerd.sock"),
		ctrdLog:   filepath.Join(dir, "containerd.log"),
		fifoDir:   filepath.Join(dir, "fifo"),
	}
	t.Cleanup(func() {
		// Last: nothing may stay mounted under dir, then dir goes.
		if left := mountsUnder(dir); len(left) > 0 {
			t.Errorf("mounts left under %s: %v", dir, left)
			for i := len(left) - 1; i >= 0; i-- {
				unix.Unmount(left[i], unix.MNT_DETACH)
			}
		}
		if t.Failed() {
			e.dumpLogs()
		}
		if err := os.RemoveAll(dir); err != nil {
			t.Errorf("remove %s: %v", dir, err)
		}
	})
	e.metricsAddr = freePort(t)
	e.proxyArgv = proxyCommand(t, e.proxyRoot, e.proxySock, e.metricsAddr, backend)
	e.imageTar = buildImage(t, filepath.Join(dir, "image"))

	e.startProxy()
	t.Cleanup(func() { e.stopProxy(syscall.SIGTERM) })
	e.startContainerd()
	t.Cleanup(e.stopContainerd)
	t.Cleanup(e.removeContainers)

	e.image = e.importImage(snapshotter)
	return e
}

// proxyCommand returns the argv of the proxy: STRATA_E2E_PROXY's template
// or a freshly built stubproxy. The template's {root}, {address} and
// {metrics} (a free 127.0.0.1 port for Prometheus metrics) are replaced,
// and {backend} by backend.
func proxyCommand(t *testing.T, root, addr, metrics, backend string) []string {
	t.Helper()
	tmpl := os.Getenv(envProxy)
	if tmpl == "" {
		bin := filepath.Join(t.TempDir(), "stubproxy")
		// go test puts its own GOROOT/bin first in PATH.
		run(t, cmdTimeout*3, "go", "build", "-o", bin, "./cmd/stubproxy")
		tmpl = bin + " --root {root} --address {address} --metrics-address {metrics}"
	}
	var argv []string
	for _, f := range strings.Fields(tmpl) {
		f = strings.ReplaceAll(f, "{root}", root)
		f = strings.ReplaceAll(f, "{metrics}", metrics)
		f = strings.ReplaceAll(f, "{backend}", backend)
		argv = append(argv, strings.ReplaceAll(f, "{address}", addr))
	}
	return argv
}

func (e *env) startProxy() {
	e.t.Helper()
	cmd, done := e.spawn(e.proxyLog, e.proxyArgv...)
	e.proxy, e.proxyDone = cmd, done
	e.waitReady("proxy", done, func() error {
		c, err := net.DialTimeout("unix", e.proxySock, time.Second)
		if err == nil {
			c.Close()
		}
		return err
	})
}

// stopProxy signals the proxy and waits for it to exit; under SIGTERM it
// must exit 0.
func (e *env) stopProxy(sig syscall.Signal) {
	e.t.Helper()
	if e.proxy == nil {
		return
	}
	err := e.stop("proxy", e.proxy, e.proxyDone, sig)
	e.proxy = nil
	if sig == syscall.SIGTERM && err != nil {
		e.t.Errorf("proxy on SIGTERM: %v (want exit 0)", err)
	}
}

func (e *env) startContainerd() {
	e.t.Helper()
	d := e.dir
	config := fmt.Sprintf(`version = 2
root = %q
state = %q
disabled_plugins = ["io.containerd.grpc.v1.cri"]

[grpc]
  address = %q
[ttrpc]
  address = %q
[debug]
  address = %q
[plugins."io.containerd.internal.v1.opt"]
  path = %q

[proxy_plugins.%s]
  type = "snapshot"
  address = %q
`, filepath.Join(d, "root"), filepath.Join(d, "state"), e.ctrdSock, e.ctrdSock+".ttrpc",
		filepath.Join(d, "debug.sock"), filepath.Join(d, "opt"), snapshotter, e.proxySock)
	path := filepath.Join(d, "config.toml")
	if err := os.WriteFile(path, []byte(config), 0o600); err != nil {
		e.t.Fatal(err)
	}
	e.containerd, e.ctrdDone = e.spawn(e.ctrdLog, "containerd", "--config", path)
	e.waitReady("containerd", e.ctrdDone, func() error {
		_, err := e.ctrErr(5*time.Second, "version")
		return err
	})
}

func (e *env) stopContainerd() {
	if e.containerd == nil {
		return
	}
	if err := e.stop("containerd", e.containerd, e.ctrdDone, syscall.SIGTERM); err != nil {
		e.t.Logf("containerd stop: %v", err)
	}
	e.containerd = nil
	killShims(e.ctrdSock)
}

// removeContainers deletes every task and container the test left behind.
func (e *env) removeContainers() {
	if e.containerd == nil {
		return
	}
	out, _ := e.ctrErr(cmdTimeout, "tasks", "ls", "-q")
	for _, id := range strings.Fields(out) {
		e.ctrErr(cmdTimeout, "tasks", "kill", "-s", "SIGKILL", id)
		e.ctrErr(cmdTimeout, "tasks", "delete", "-f", id)
	}
	out, _ = e.ctrErr(cmdTimeout, "containers", "ls", "-q")
	for _, id := range strings.Fields(out) {
		e.ctrErr(cmdTimeout, "containers", "rm", id)
	}
}

// spawn starts argv with output appended to logPath; done receives Wait's
// result.
func (e *env) spawn(logPath string, argv ...string) (*exec.Cmd, chan error) {
	e.t.Helper()
	log, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		e.t.Fatal(err)
	}
	fmt.Fprintf(log, "### %s: %s\n", time.Now().Format(time.RFC3339Nano), strings.Join(argv, " "))
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = log, log
	cmd.Dir = e.dir
	if err := cmd.Start(); err != nil {
		log.Close()
		e.t.Fatalf("start %v: %v", argv, err)
	}
	done := make(chan error, 1)
	go func() {
		done <- cmd.Wait()
		log.Close()
	}()
	return cmd, done
}

func (e *env) waitReady(what string, done chan error, ready func() error) {
	e.t.Helper()
	deadline := time.Now().Add(startTimeout)
	for {
		err := ready()
		if err == nil {
			return
		}
		select {
		case werr := <-done:
			done <- werr
			e.t.Fatalf("%s exited before it was ready: %v", what, werr)
		default:
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("%s not ready after %v: %v", what, startTimeout, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// stop sends sig and waits; after stopTimeout it kills.
func (e *env) stop(what string, cmd *exec.Cmd, done chan error, sig syscall.Signal) error {
	cmd.Process.Signal(sig)
	select {
	case err := <-done:
		return err
	case <-time.After(stopTimeout):
		cmd.Process.Kill()
		<-done
		return fmt.Errorf("%s ignored %v for %v, killed", what, sig, stopTimeout)
	}
}

// ctr runs ctr against this env's containerd and fails the test on error.
func (e *env) ctr(args ...string) string {
	e.t.Helper()
	out, err := e.ctrErr(cmdTimeout, args...)
	if err != nil {
		e.t.Fatalf("ctr %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

func (e *env) ctrErr(timeout time.Duration, args ...string) (string, error) {
	argv := append([]string{"--address", e.ctrdSock, "--namespace", namespace}, args...)
	return runErr(timeout, "ctr", argv...)
}

// importImage imports the image tarball, unpacking it with snapshotter sn,
// and returns the image's name.
func (e *env) importImage(sn string) string {
	e.t.Helper()
	e.ctr("images", "import", "--base-name", imageBase, "--snapshotter", sn, e.imageTar)
	names := strings.Fields(e.ctr("images", "ls", "-q"))
	if len(names) != 1 || !strings.HasPrefix(names[0], imageBase) {
		e.t.Fatalf("images after import: %v, want one named %s*", names, imageBase)
	}
	return names[0]
}

// runContainer is `ctr run --rm` with the fifo dir under the temp dir.
func (e *env) runContainer(sn, id string, cmd ...string) (string, error) {
	args := append([]string{"run", "--rm", "--snapshotter", sn, "--fifo-dir", e.fifoDir, e.image, id}, cmd...)
	return e.ctrErr(cmdTimeout, args...)
}

// backendSnapshots lists the snapshots the proxy itself holds, asking it
// directly over its socket, as containerd does.
func (e *env) backendSnapshots() []string {
	e.t.Helper()
	conn, err := grpc.NewClient("unix://"+e.proxySock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		e.t.Fatal(err)
	}
	defer conn.Close()
	sn := snproxy.NewSnapshotter(snapshotsapi.NewSnapshotsClient(conn), snapshotter)
	ctx, cancel := context.WithTimeout(context.Background(), cmdTimeout)
	defer cancel()
	var names []string
	if err := sn.Walk(ctx, func(_ context.Context, i snapshots.Info) error {
		names = append(names, fmt.Sprintf("%s(%s)", i.Name, i.Kind))
		return nil
	}); err != nil {
		e.t.Fatalf("walk proxy snapshots: %v", err)
	}
	return names
}

func (e *env) dumpLogs() {
	for _, p := range []string{e.proxyLog, e.ctrdLog} {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		lines := strings.Split(strings.TrimSpace(string(b)), "\n")
		if len(lines) > 60 {
			lines = lines[len(lines)-60:]
		}
		e.t.Logf("--- last lines of %s:\n%s", p, strings.Join(lines, "\n"))
	}
}

func run(t *testing.T, timeout time.Duration, name string, args ...string) string {
	t.Helper()
	out, err := runErr(timeout, name, args...)
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return out
}

// runErr runs a command under a timeout and returns its combined output.
func runErr(timeout time.Duration, name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.WaitDelay = 5 * time.Second
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		err = fmt.Errorf("timed out after %v: %w", timeout, err)
	}
	return string(out), err
}

// buildImage builds the two-layer test image with umoci under dir and packs
// its OCI layout as a tarball. Layer 1: static busybox, a few applet
// symlinks, /etc/deleted-me. Layer 2: adds /etc/added, deletes
// /etc/deleted-me (an OCI whiteout in the layer tar, checked here).
func buildImage(t *testing.T, dir string) string {
	t.Helper()
	bb, err := exec.LookPath("busybox")
	if err != nil {
		testutil.Unavailable(t, "busybox not found")
	}
	requireStatic(t, bb)
	layout, bundle := filepath.Join(dir, "layout"), filepath.Join(dir, "bundle")
	ref := layout + ":latest"
	umoci := func(args ...string) { run(t, cmdTimeout, "umoci", args...) }
	umoci("init", "--layout", layout)
	umoci("new", "--image", ref)
	umoci("unpack", "--image", ref, bundle)

	rootfs := filepath.Join(bundle, "rootfs")
	for _, d := range []string{"bin", "etc", "tmp", "proc", "sys", "dev"} {
		mustMkdir(t, filepath.Join(rootfs, d))
	}
	copyFile(t, bb, filepath.Join(rootfs, "bin", "busybox"), 0o755)
	for _, applet := range []string{"sh", "cat", "ls", "test", "sleep", "echo", "true"} {
		if err := os.Symlink("busybox", filepath.Join(rootfs, "bin", applet)); err != nil {
			t.Fatal(err)
		}
	}
	mustWrite(t, filepath.Join(rootfs, "etc", "deleted-me"), "from layer 1\n")
	umoci("repack", "--image", ref, bundle)

	// A fresh unpack, so that the next repack diffs against layer 1.
	bundle = filepath.Join(dir, "bundle2")
	rootfs = filepath.Join(bundle, "rootfs")
	umoci("unpack", "--image", ref, bundle)
	if err := os.Remove(filepath.Join(rootfs, "etc", "deleted-me")); err != nil {
		t.Fatal(err)
	}
	mustWrite(t, filepath.Join(rootfs, "etc", "added"), "from layer 2\n")
	umoci("repack", "--image", ref, bundle)
	umoci("gc", "--layout", layout)

	layers := manifestLayers(t, layout)
	if len(layers) != 2 {
		t.Fatalf("image has %d layers, want 2", len(layers))
	}
	if names := tarNames(t, layers[1]); !contains(names, "etc/.wh.deleted-me") || !contains(names, "etc/added") {
		t.Fatalf("layer 2 entries %v lack etc/.wh.deleted-me or etc/added", names)
	}
	out := filepath.Join(dir, "image.tar")
	tarDir(t, layout, out)
	return out
}

// requireStatic insists on a static busybox: the image has no libc.
func requireStatic(t *testing.T, path string) {
	t.Helper()
	f, err := elf.Open(path)
	if err != nil {
		t.Fatalf("busybox %s: %v", path, err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			testutil.Unavailable(t, path+" is dynamically linked; install busybox-static")
		}
	}
}

// manifestLayers returns the blob paths of the single manifest's layers.
func manifestLayers(t *testing.T, layout string) []string {
	t.Helper()
	type desc struct {
		Digest string `json:"digest"`
	}
	var index struct {
		Manifests []desc `json:"manifests"`
	}
	var manifest struct {
		Layers []desc `json:"layers"`
	}
	blob := func(d string) string {
		alg, hex, _ := strings.Cut(d, ":")
		return filepath.Join(layout, "blobs", alg, hex)
	}
	readJSON(t, filepath.Join(layout, "index.json"), &index)
	if len(index.Manifests) != 1 {
		t.Fatalf("index has %d manifests, want 1", len(index.Manifests))
	}
	readJSON(t, blob(index.Manifests[0].Digest), &manifest)
	var paths []string
	for _, l := range manifest.Layers {
		paths = append(paths, blob(l.Digest))
	}
	return paths
}

func tarNames(t *testing.T, gzPath string) []string {
	t.Helper()
	f, err := os.Open(gzPath)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatalf("%s: %v", gzPath, err)
	}
	tr := tar.NewReader(zr)
	var names []string
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return names
		}
		if err != nil {
			t.Fatalf("%s: %v", gzPath, err)
		}
		names = append(names, strings.TrimPrefix(h.Name, "./"))
	}
}

// tarDir writes the tree at src as a tar file (an OCI layout tarball).
func tarDir(t *testing.T, src, dst string) {
	t.Helper()
	f, err := os.Create(dst)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tw := tar.NewWriter(f)
	if err := tw.AddFS(os.DirFS(src)); err != nil {
		t.Fatalf("tar %s: %v", src, err)
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
}

// mountsUnder lists mount points at or below dir, outermost first.
func mountsUnder(dir string) []string {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []string
	s := bufio.NewScanner(f)
	for s.Scan() {
		fields := strings.Fields(s.Text())
		if len(fields) < 5 {
			continue
		}
		mp := unescapeMountinfo(fields[4])
		if mp == dir || strings.HasPrefix(mp, dir+"/") {
			out = append(out, mp)
		}
	}
	return out
}

func unescapeMountinfo(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			var c byte
			if _, err := fmt.Sscanf(s[i+1:i+4], "%03o", &c); err == nil {
				b.WriteByte(c)
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// killShims kills runc shims left serving this env's containerd (they
// outlive the daemon by design). They are ours: their -address is our
// temp socket.
func killShims(ctrdSock string) {
	procs, _ := os.ReadDir("/proc")
	for _, p := range procs {
		b, err := os.ReadFile(filepath.Join("/proc", p.Name(), "cmdline"))
		if err != nil {
			continue
		}
		argv := strings.Split(string(b), "\x00")
		if len(argv) == 0 || !strings.Contains(filepath.Base(argv[0]), "containerd-shim") {
			continue
		}
		for i := range argv {
			if argv[i] == "-address" && i+1 < len(argv) && argv[i+1] == ctrdSock {
				var pid int
				fmt.Sscanf(p.Name(), "%d", &pid)
				syscall.Kill(pid, syscall.SIGKILL)
			}
		}
	}
}

// guardRunContainerd removes afterwards what containerd and ctr create under
// /run/containerd whatever their config says, and nothing else: other
// containerd daemons may share the dir. It removes runc's state dir for our
// namespace, new shim sockets in s/ that nobody listens on any more, and
// then s/, runc/, fifo/ and /run/containerd itself if they are new and
// empty.
func guardRunContainerd(t *testing.T) {
	t.Helper()
	subdirs := []string{"s", "runc", "fifo"}
	existed := map[string]bool{}
	before := map[string]bool{}
	for _, sd := range append([]string{"."}, subdirs...) {
		p := filepath.Join(runContainerd, sd)
		if _, err := os.Lstat(p); err == nil {
			existed[p] = true
		}
		ents, _ := os.ReadDir(p)
		for _, e := range ents {
			before[filepath.Join(p, e.Name())] = true
		}
	}
	t.Cleanup(func() {
		os.RemoveAll(filepath.Join(runContainerd, "runc", namespace))
		s := filepath.Join(runContainerd, "s")
		ents, _ := os.ReadDir(s)
		for _, e := range ents {
			p := filepath.Join(s, e.Name())
			if before[p] || e.Type() != fs.ModeSocket {
				continue
			}
			if c, err := net.DialTimeout("unix", p, time.Second); err == nil {
				c.Close() // a live shim, not ours
				continue
			}
			os.Remove(p)
		}
		for _, sd := range append(subdirs, ".") {
			p := filepath.Clean(filepath.Join(runContainerd, sd))
			if !existed[p] {
				os.Remove(p) // fails, as it should, unless empty
			}
		}
		for _, sd := range subdirs {
			p := filepath.Join(runContainerd, sd)
			if existed[p] {
				continue
			}
			if _, err := os.Lstat(p); err == nil {
				t.Logf("left %s: in use by another containerd?", p)
			}
		}
	})
}

func readJSON(t *testing.T, path string, v any) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

func mustMkdir(t *testing.T, p string) {
	t.Helper()
	if err := os.MkdirAll(p, 0o755); err != nil {
		t.Fatal(err)
	}
}

func mustWrite(t *testing.T, p, data string) {
	t.Helper()
	if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
}

func copyFile(t *testing.T, src, dst string, mode fs.FileMode) {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, b, mode); err != nil {
		t.Fatal(err)
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// lines returns the non-empty trimmed lines of s.
func lines(s string) []string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if l = strings.TrimSpace(l); l != "" {
			out = append(out, l)
		}
	}
	return out
}

func errorf(format string, args ...any) error { return fmt.Errorf(format, args...) }

func freePort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// proxyMetrics returns the proxy's Prometheus metrics lines for strata's
// snapshot operations, or nil if it serves none.
func (e *env) proxyMetrics() []string {
	c := http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get("http://" + e.metricsAddr + "/metrics")
	if err != nil {
		return nil
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil
	}
	var out []string
	for _, l := range lines(string(b)) {
		if strings.HasPrefix(l, "strata_snapshot_operations_total{") ||
			strings.HasPrefix(l, "strata_snapshot_operation_duration_seconds_sum{") {
			out = append(out, l)
		}
	}
	return out
}

// fuseMounts lists the FUSE mounts under the proxy's root (the FUSE
// backend's <root>/mounts/<id>).
func (e *env) fuseMounts() []string {
	var out []string
	for _, mp := range mountsUnder(e.proxyRoot) {
		var st unix.Statfs_t
		if unix.Statfs(mp, &st) == nil && st.Type == unix.FUSE_SUPER_MAGIC {
			out = append(out, mp)
		}
	}
	return out
}

// fuseServers lists "pid target" of the FUSE server processes serving
// mounts under the proxy's root, sorted.
func (e *env) fuseServers() []string {
	ents, _ := os.ReadDir("/proc")
	var out []string
	for _, d := range ents {
		pid, err := strconv.Atoi(d.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", d.Name(), "cmdline"))
		if err != nil {
			continue
		}
		args := strings.Split(strings.TrimRight(string(b), "\x00"), "\x00")
		if len(args) < 3 || args[1] != "mount" || !slices.Contains(args, "--foreground") {
			continue
		}
		if target := args[len(args)-1]; strings.HasPrefix(target, e.proxyRoot+"/") {
			out = append(out, fmt.Sprintf("%d %s", pid, target))
		}
	}
	sort.Strings(out)
	return out
}

// killAndRemove stops and removes the container id.
func (e *env) killAndRemove(id string) {
	e.t.Helper()
	e.ctr("tasks", "kill", "-s", "SIGKILL", id)
	deadline := time.Now().Add(20 * time.Second)
	for {
		out, err := e.ctrErr(cmdTimeout, "tasks", "ls")
		if err == nil && !strings.Contains(out, id+" ") {
			break
		}
		if err == nil && !strings.Contains(out, "RUNNING") {
			break
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("container %s still running: %v %s", id, err, out)
		}
		time.Sleep(200 * time.Millisecond)
	}
	e.ctr("tasks", "delete", id)
	e.ctr("containers", "rm", id)
}
