//go:build linux

package fuse

import (
	"bytes"
	"github.com/hanwen/go-fuse/v2/posixtest"
	"golang.org/x/sys/unix"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"

	"github.com/stratafs/strata/internal/testutil"
	"github.com/stratafs/strata/overlay"
	"github.com/stratafs/strata/overlay/overlaytest"
)

// backend runs strata's FUSE filesystem for the overlaytest suite.
type backend struct{ opts Options }

func (backend) Name() string { return "strata-fuse" }

// Quirks pins how the FUSE backend behaves where backends may differ.
func (backend) Quirks() overlaytest.QuirkSet {
	return overlaytest.QuirkSet{
		overlaytest.RenameDirEXDEV:      false,
		overlaytest.RenameDirByRedirect: true,
		// MetadataOnlyCopyUp is not pinned: chmod, chown, utimes and
		// setxattr of a lower file write a metacopy (as the kernel),
		// link and rename still copy the data up (the kernel: metacopy
		// with a redirect).
		overlaytest.InoChangesOnCopyUp:    false, // origin xattr
		overlaytest.DirInoChangesOnCopyUp: false,
		overlaytest.CopyUpFillsSmallHoles: false, // SEEK_DATA/SEEK_HOLE copy
		overlaytest.StaleReadAfterCopyUp:  false, // a read-only fd follows the copy-up (file.follow), as on the kernel
	}
}

// Skips: a page fault on a mapping of a file that this same process
// serves blocks its thread; with one P, or when a GC then stops the
// world, the server cannot answer (go-fuse fs/api.go, "Deadlocks" 3). Not
// a filesystem bug: only in-process tests hit it; childBackend runs them.
func (backend) Skips() map[string]string {
	const why = "mmap of a file served by this same process can deadlock (go-fuse known deadlock 3: " +
		"with one P, or when a GC stops the world during the page fault); runs in TestOverlaytestChildServer"
	return map[string]string{"MmapWrite": why, "OpenFdAcrossCopyUp": why}
}

type fuseMount struct {
	layers overlaytest.Layers
	target string
	opts   Options
	// stackOpts are added to the stack's options (WithUpper is set
	// from layers).
	stackOpts []overlay.StackOption
	srv       *Server
	mounted   bool
}

func (b backend) Mount(t *testing.T, l overlaytest.Layers) overlaytest.Mounted {
	t.Helper()
	m := &fuseMount{layers: l, target: t.TempDir(), opts: b.opts}
	m.Remount(t)
	t.Cleanup(func() { m.Unmount(t) })
	return m
}

func (m *fuseMount) Root() string { return m.target }

func (m *fuseMount) Unmount(t *testing.T) {
	t.Helper()
	if !m.mounted {
		return
	}
	if err := m.srv.Unmount(); err != nil {
		t.Errorf("fuse backend: %v", err)
	}
	m.srv.Wait()
	m.mounted = false
}

func (m *fuseMount) Remount(t *testing.T) {
	t.Helper()
	m.Unmount(t)
	var opts []overlay.StackOption
	if m.layers.Upper != "" {
		opts = append(opts, overlay.WithUpper(m.layers.Upper, m.layers.Work))
	}
	s, err := overlay.NewStack(m.layers.Lowers, append(opts, m.stackOpts...)...)
	if err != nil {
		t.Fatalf("fuse backend: %v", err)
	}
	o := m.opts
	o.Debug = o.Debug || testing.Verbose() && debugFUSE
	srv, err := Mount(s, m.target, o)
	if err != nil {
		t.Fatalf("fuse backend: %v", err)
	}
	m.srv, m.mounted = srv, true
}

// debugFUSE turns on request logging under -v (flip while debugging).
var debugFUSE = os.Getenv("STRATA_FUSE_DEBUG") == "1"

func TestOverlaytest(t *testing.T) {
	testutil.RequireFUSE(t)
	overlaytest.Run(t, backend{})
}

// TestPosix runs go-fuse's POSIX checks on a mount of an empty lower
// layer with an upper layer.
func TestPosix(t *testing.T) {
	testutil.RequireFUSE(t)
	names := make([]string, 0, len(posixtest.All))
	for name := range posixtest.All {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		t.Run(name, func(t *testing.T) {
			if reason, ok := posixSkips[name]; ok {
				t.Skip(reason)
			}
			lower, upper, work := t.TempDir(), t.TempDir(), t.TempDir()
			m := backend{}.Mount(t, overlaytest.Layers{Lowers: []string{lower}, Upper: upper, Work: work})
			posixtest.All[name](t, m.Root())
		})
	}
}

// posixSkips lists posixtest checks that do not hold on a local
// filesystem either (checked against a plain ext4 dir).
var posixSkips = map[string]string{
	"FcntlFlockLocksFile": "expects two fds of one process to conflict on POSIX locks; " +
		"fails on plain ext4 too (locks are per process); strata leaves locks to the kernel",
}

// childBackend serves each mount from a child process (this test binary
// re-executed), as strata runs in production: no in-process deadlocks
// (a page fault on a mapping of a file this process serves blocks a
// thread that a stop-the-world GC then waits for forever, go-fuse fs/api.go
// "Deadlocks" 3), so the mmap checks run too. Built with -race, the child
// reports data races on its stderr, which fails the test.
type childBackend struct{ backend }

func (childBackend) Name() string { return "strata-fuse-child" }

func (childBackend) Skips() map[string]string { return nil }

type childMount struct {
	spec    childSpec
	cmd     *exec.Cmd
	stderr  *bytes.Buffer
	mounted bool
}

func (childBackend) Mount(t *testing.T, l overlaytest.Layers) overlaytest.Mounted {
	t.Helper()
	m := &childMount{spec: childSpec{Lowers: l.Lowers, Upper: l.Upper, Work: l.Work, Target: t.TempDir()}}
	m.Remount(t)
	t.Cleanup(func() { m.Unmount(t) })
	return m
}

func (m *childMount) Root() string { return m.spec.Target }

func (m *childMount) Unmount(t *testing.T) {
	t.Helper()
	if !m.mounted {
		return
	}
	m.mounted = false
	if err := unix.Unmount(m.spec.Target, 0); err != nil {
		t.Errorf("child backend: unmount: %v; detaching", err)
		unix.Unmount(m.spec.Target, unix.MNT_DETACH)
		m.cmd.Process.Kill()
	}
	err := m.cmd.Wait()
	if err != nil || strings.Contains(m.stderr.String(), "DATA RACE") {
		t.Errorf("child server: %v\n%s", err, m.stderr.String())
	}
}

func (m *childMount) Remount(t *testing.T) {
	t.Helper()
	m.Unmount(t)
	m.stderr = &bytes.Buffer{}
	m.cmd = startChild(t, m.spec, m.stderr)
	m.mounted = true
}

// TestOverlaytestChildServer runs the suite with the server in a child
// process.
func TestOverlaytestChildServer(t *testing.T) {
	testutil.RequireFUSE(t)
	overlaytest.Run(t, childBackend{})
}
