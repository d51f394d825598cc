package overlay

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/stratafs/strata/internal/testutil"
)

// mkdirs creates n layer dirs under base named by nameFmt (given i).
func mkdirs(t testing.TB, base, nameFmt string, n int) []string {
	t.Helper()
	out := make([]string, n)
	for i := range out {
		out[i] = filepath.Join(base, fmt.Sprintf(nameFmt, i))
		if err := os.MkdirAll(out[i], 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return out
}

func writeFile(t testing.TB, p, data string) {
	t.Helper()
	if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
}

func readFile(t testing.TB, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// mountedAt returns the topmost mount on target, or nil.
func mountedAt(t testing.TB, target string) *mountEntry {
	t.Helper()
	entries, err := readMountinfo()
	if err != nil {
		t.Fatal(err)
	}
	return lastMountAt(entries, target)
}

// cleanupMount unmounts target at the end of the test if still mounted.
func cleanupMount(t testing.TB, target string) {
	t.Helper()
	t.Cleanup(func() {
		for mountedAt(t, target) != nil {
			if err := Unmount(target, WithDetach()); err != nil {
				t.Errorf("cleanup: %v", err)
				return
			}
		}
	})
}

// mountT mounts s on a new dir with the probed features.
func mountT(t testing.TB, s *Stack, o MountOptions) (string, *MountResult) {
	t.Helper()
	target, err := checkTarget(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	cleanupMount(t, target)
	res, err := MountStack(s, target, o)
	if err != nil {
		t.Fatalf("MountStack: %v", err)
	}
	return res.Target, res
}

// mountForced mounts s with features f (to exercise fallbacks).
func mountForced(t testing.TB, s *Stack, o MountOptions, f Features) (string, *MountResult) {
	t.Helper()
	target, err := checkTarget(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	cleanupMount(t, target)
	res, err := mountStack(s, target, o, f)
	if err != nil {
		t.Fatalf("mountStack: %v", err)
	}
	return target, res
}

func probed(t testing.TB) Features {
	t.Helper()
	f, err := Probe()
	if err != nil {
		t.Fatalf("Probe: %v", err)
	}
	return f
}

func mustStack(t testing.TB, lowers []string, opts ...StackOption) *Stack {
	t.Helper()
	s, err := NewStack(lowers, opts...)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestMountRoundTripUpper(t *testing.T) {
	testutil.RequireOverlay(t)
	base := t.TempDir()
	l := mkdirs(t, base, "l%d", 2)
	uw := mkdirs(t, base, "uw%d", 2)
	writeFile(t, filepath.Join(l[0], "a"), "top")
	writeFile(t, filepath.Join(l[1], "a"), "bottom")
	writeFile(t, filepath.Join(l[1], "b"), "only-bottom")
	s := mustStack(t, l, WithUpper(uw[0], uw[1]))

	target, res := mountT(t, s, MountOptions{})
	f := probed(t)
	if f.NewMountAPI && f.LowerdirPlus && res.Method != "fsmount" {
		t.Errorf("method %q, want fsmount", res.Method)
	}
	t.Logf("method %s options %v dropped %v notes %v", res.Method, res.Options, res.Dropped, res.Notes)
	if f.RedirectDir && f.Metacopy && len(res.Dropped) != 0 {
		t.Errorf("dropped %v though the probe found them supported", res.Dropped)
	}
	for _, want := range []string{"index=off"} {
		if !slices.Contains(res.Options, want) {
			t.Errorf("options %v lack %s", res.Options, want)
		}
	}
	if got := readFile(t, filepath.Join(target, "a")); got != "top" {
		t.Errorf("a = %q, want the topmost lower's", got)
	}
	if got := readFile(t, filepath.Join(target, "b")); got != "only-bottom" {
		t.Errorf("b = %q", got)
	}
	writeFile(t, filepath.Join(target, "new"), "written")
	if got := readFile(t, filepath.Join(uw[0], "new")); got != "written" {
		t.Errorf("upper/new = %q", got)
	}
	e := mountedAt(t, target)
	if e == nil || e.FSType != "overlay" {
		t.Fatalf("no overlay at %s: %+v", target, e)
	}
	if up, _ := e.lastOption("upperdir"); up != uw[0] {
		t.Errorf("mountinfo upperdir %q, want %q", up, uw[0])
	}
	if err := Unmount(target); err != nil {
		t.Fatalf("Unmount: %v", err)
	}
	if e := mountedAt(t, target); e != nil {
		t.Fatalf("still mounted after Unmount: %+v", e)
	}
	if _, err := os.Stat(filepath.Join(target, "new")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("target still shows the union after Unmount: %v", err)
	}
	if err := Unmount(target); !errors.Is(err, ErrNotMounted) {
		t.Errorf("second Unmount = %v, want ErrNotMounted", err)
	}
}

func TestMountDroppedFormat(t *testing.T) {
	testutil.RequireOverlay(t)
	f := probed(t)
	if !f.NewMountAPI || !f.LowerdirPlus {
		t.Skip("uses the probed mount method")
	}
	base := t.TempDir()
	l := mkdirs(t, base, "l%d", 1)
	uw := mkdirs(t, base, "uw%d", 2)
	s := mustStack(t, l, WithUpper(uw[0], uw[1]))
	noMeta := f
	noMeta.Metacopy = false
	_, res := mountForced(t, s, MountOptions{}, noMeta)
	if !slices.Equal(res.Dropped, []string{"metacopy=on"}) || slices.Contains(res.Options, "metacopy=on") {
		t.Errorf("dropped %v options %v, want metacopy=on dropped and recorded", res.Dropped, res.Options)
	}
	if err := Unmount(res.Target); err != nil {
		t.Fatal(err)
	}
	target, err := checkTarget(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	_, err = mountStack(s, target, MountOptions{StrictFormat: true}, noMeta)
	if !errors.Is(err, ErrNotSupported) {
		t.Errorf("StrictFormat without metacopy: %v, want ErrNotSupported", err)
	}
}

func TestMountReadOnlyMultiLower(t *testing.T) {
	testutil.RequireOverlay(t)
	base := t.TempDir()
	l := mkdirs(t, base, "l%d", 3)
	writeFile(t, filepath.Join(l[2], "gone"), "hidden below a whiteout")
	writeFile(t, filepath.Join(l[2], "kept"), "kept")
	if err := unix.Mknod(filepath.Join(l[0], "gone"), unix.S_IFCHR, 0); err != nil {
		t.Fatal(err)
	}
	target, res := mountT(t, mustStack(t, l), MountOptions{})
	if res.Method == "bind" || res.Method == "open_tree" {
		t.Fatalf("method %q for three lowers", res.Method)
	}
	if _, err := os.Lstat(filepath.Join(target, "gone")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("whiteout did not hide gone: %v", err)
	}
	if got := readFile(t, filepath.Join(target, "kept")); got != "kept" {
		t.Errorf("kept = %q", got)
	}
	err := os.WriteFile(filepath.Join(target, "x"), nil, 0o644)
	if !errors.Is(err, unix.EROFS) {
		t.Errorf("write to a read-only overlay: %v, want EROFS", err)
	}
}

func TestMountReadOnlyWithUpper(t *testing.T) {
	testutil.RequireOverlay(t)
	base := t.TempDir()
	l := mkdirs(t, base, "l%d", 1)
	uw := mkdirs(t, base, "uw%d", 2)
	target, _ := mountT(t, mustStack(t, l, WithUpper(uw[0], uw[1])), MountOptions{ReadOnly: true, Volatile: true})
	if err := os.WriteFile(filepath.Join(target, "x"), nil, 0o644); !errors.Is(err, unix.EROFS) {
		t.Errorf("write: %v, want EROFS", err)
	}
}

func TestMountSingleLowerBind(t *testing.T) {
	testutil.RequireOverlay(t)
	f := probed(t)
	for _, tc := range []struct {
		name   string
		feats  Features
		method string
	}{
		{"probed", f, map[bool]string{true: "open_tree", false: "bind"}[f.NewMountAPI]},
		{"mount2", Features{PageSize: f.PageSize}, "bind"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := mkdirs(t, t.TempDir(), "only%d", 1)
			writeFile(t, filepath.Join(l[0], "f"), "data")
			target, res := mountForced(t, mustStack(t, l), MountOptions{}, tc.feats)
			if res.Method != tc.method {
				t.Errorf("method %q, want %q", res.Method, tc.method)
			}
			if got := readFile(t, filepath.Join(target, "f")); got != "data" {
				t.Errorf("f = %q", got)
			}
			if err := os.WriteFile(filepath.Join(target, "x"), nil, 0o644); !errors.Is(err, unix.EROFS) {
				t.Errorf("write to the read-only bind: %v, want EROFS", err)
			}
			e := mountedAt(t, target)
			if e == nil || e.FSType == "overlay" {
				t.Fatalf("want a bind mount at %s, got %+v", target, e)
			}
			if err := Unmount(target); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestMountUpperOnlyBind(t *testing.T) {
	testutil.RequireOverlay(t)
	uw := mkdirs(t, t.TempDir(), "uw%d", 2)
	target, _ := mountT(t, mustStack(t, nil, WithUpper(uw[0], uw[1])), MountOptions{})
	writeFile(t, filepath.Join(target, "f"), "w")
	if got := readFile(t, filepath.Join(uw[0], "f")); got != "w" {
		t.Errorf("upper/f = %q", got)
	}
}

// longBase returns a dir under t.TempDir whose path is over 255 bytes.
func longBase(t testing.TB) string {
	t.Helper()
	base := filepath.Join(t.TempDir(), strings.Repeat("a", 200), strings.Repeat("b", 60))
	if err := os.MkdirAll(base, 0o755); err != nil {
		t.Fatal(err)
	}
	return base
}

func TestMountLongPaths(t *testing.T) {
	testutil.RequireOverlay(t)
	f := probed(t)
	cases := []struct {
		name  string
		feats Features
	}{
		{"probed", f},
		{"no-layer-fd", Features{NewMountAPI: f.NewMountAPI, LowerdirPlus: f.LowerdirPlus, PageSize: f.PageSize}},
		{"mount2", Features{PageSize: f.PageSize}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if tc.feats.LowerdirPlus != f.LowerdirPlus && tc.name != "mount2" {
				t.Skip("kernel lacks lowerdir+")
			}
			base := longBase(t)
			l := mkdirs(t, base, "lower%d", 3)
			uw := mkdirs(t, base, "uw%d", 2)
			for _, p := range append(l, uw...) {
				if len(p) <= maxFsconfigString {
					t.Fatalf("layer path only %d bytes", len(p))
				}
			}
			writeFile(t, filepath.Join(l[0], "f"), "top")
			writeFile(t, filepath.Join(l[2], "f"), "bottom")
			target, res := mountForced(t, mustStack(t, l, WithUpper(uw[0], uw[1])), MountOptions{}, tc.feats)
			t.Logf("method %s", res.Method)
			if got := readFile(t, filepath.Join(target, "f")); got != "top" {
				t.Errorf("f = %q, want top", got)
			}
			writeFile(t, filepath.Join(target, "g"), "up")
			if got := readFile(t, filepath.Join(uw[0], "g")); got != "up" {
				t.Errorf("upper/g = %q", got)
			}
			if tc.feats.LayerFD {
				// fd layers are shown by their full path.
				if up, _ := mountedAt(t, target).lastOption("upperdir"); up != uw[0] {
					t.Errorf("mountinfo upperdir %q, want %q", up, uw[0])
				}
			}
			if err := Unmount(target); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// chain500 builds n lower dirs with long-ish absolute paths, a marker file
// in the top and bottom one, and an upper.
func chain500(t testing.TB, base, nameFmt string, n int) *Stack {
	t.Helper()
	l := mkdirs(t, base, nameFmt, n)
	writeFile(t, filepath.Join(l[0], "f"), "top")
	writeFile(t, filepath.Join(l[n-1], "f"), "bottom")
	writeFile(t, filepath.Join(l[n-1], "bottom-only"), "b")
	uw := mkdirs(t, base, "uw%d", 2)
	return mustStack(t, l, WithUpper(uw[0], uw[1]))
}

func TestMount500Layers(t *testing.T) {
	testutil.RequireOverlay(t)
	f := probed(t)
	base := filepath.Join(t.TempDir(), strings.Repeat("p", 100))
	cases := []struct {
		name, nameFmt string
		feats         Features
	}{
		// ~150-byte paths: 75 KB of lowerdir=, far over mount(2)'s page.
		{"probed", "layer-with-a-long-descriptive-name-%04d", f},
		// mount(2) fits only with short names relative to the parent.
		{"mount2", "L%03d", Features{PageSize: f.PageSize}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := chain500(t, filepath.Join(base, tc.name), tc.nameFmt, MaxKernelLowers)
			if n := len(legacyData(s.Lowers(), s.Upper(), s.Work(), nil)); n <= 4096 {
				t.Fatalf("option string only %d bytes; the test must overflow a page", n)
			}
			for _, ro := range []bool{false, true} {
				target, res := mountForced(t, s, MountOptions{ReadOnly: ro}, tc.feats)
				if got := readFile(t, filepath.Join(target, "f")); got != "top" {
					t.Errorf("f = %q, want top (layer order)", got)
				}
				if got := readFile(t, filepath.Join(target, "bottom-only")); got != "b" {
					t.Errorf("bottom-only = %q", got)
				}
				e := mountedAt(t, target)
				if n := len(e.option("lowerdir+")) + len(e.option("lowerdir")); n == 0 {
					t.Errorf("no lowerdir in mountinfo")
				}
				t.Logf("read-only=%v: method %s", ro, res.Method)
				if err := Unmount(target); err != nil {
					t.Fatal(err)
				}
			}
		})
	}
}

func TestMount501Layers(t *testing.T) {
	testutil.RequireOverlay(t)
	base := filepath.Join(t.TempDir(), strings.Repeat("p", 100))
	s := chain500(t, base, "layer-with-a-long-descriptive-name-%04d", MaxKernelLowers+1)
	target := t.TempDir()
	cleanupMount(t, target)
	err := Mount(s, target, MountOptions{})
	if !errors.Is(err, ErrTooManyLayers) {
		t.Fatalf("Mount of 501 lowers: %v, want ErrTooManyLayers", err)
	}
	t.Logf("error: %v", err)
	if mountedAt(t, target) != nil {
		t.Errorf("something was mounted at %s", target)
	}
}

func TestMountInUse(t *testing.T) {
	testutil.RequireOverlay(t)
	base := t.TempDir()
	l := mkdirs(t, base, "l%d", 1)
	uw := mkdirs(t, base, "uw%d", 4) // upper, work, other upper, other work
	first, _ := mountT(t, mustStack(t, l, WithUpper(uw[0], uw[1])), MountOptions{})
	for _, tc := range []struct {
		name, upper, work, culprit string
	}{
		{"same-upper", uw[0], uw[3], uw[0]},
		{"same-work", uw[2], uw[1], uw[1]},
		{"upper-is-their-work", uw[1], uw[3], uw[1]},
	} {
		t.Run(tc.name, func(t *testing.T) {
			target := t.TempDir()
			cleanupMount(t, target)
			err := Mount(mustStack(t, l, WithUpper(tc.upper, tc.work)), target, MountOptions{})
			if !errors.Is(err, ErrInUse) {
				t.Fatalf("Mount = %v, want ErrInUse", err)
			}
			t.Logf("error: %v", err)
			if !strings.Contains(err.Error(), tc.culprit) || !strings.Contains(err.Error(), first) {
				// Not classification: the message must help a human.
				t.Errorf("error does not name the dir %s and the mount %s: %v", tc.culprit, first, err)
			}
		})
	}
	// Through a symlink to the upper: same inode, other string.
	link := filepath.Join(base, "link")
	if err := os.Symlink(uw[0], link); err != nil {
		t.Fatal(err)
	}
	s := &Stack{upper: link, work: uw[3], lowers: l, layers: append([]string{link}, l...)}
	target := t.TempDir()
	cleanupMount(t, target)
	if err := Mount(s, target, MountOptions{}); !errors.Is(err, ErrInUse) {
		t.Fatalf("Mount through a symlink = %v, want ErrInUse", err)
	}
}

func TestMountErrors(t *testing.T) {
	testutil.RequireOverlay(t)
	base := t.TempDir()
	l := mkdirs(t, base, "l%d", 2)
	uw := mkdirs(t, base, "uw%d", 2)
	s := mustStack(t, l, WithUpper(uw[0], uw[1]))

	file := filepath.Join(base, "file")
	writeFile(t, file, "")
	err := Mount(s, file, MountOptions{})
	if !errors.Is(err, unix.ENOTDIR) {
		t.Errorf("target is a file: %v, want ENOTDIR", err)
	}
	missing := filepath.Join(base, "missing")
	err = Mount(s, missing, MountOptions{})
	if !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("missing target: %v, want ErrNotExist", err)
	}

	// A layer removed after NewStack, with each mount method.
	if err := os.Remove(l[1]); err != nil {
		t.Fatal(err)
	}
	f := probed(t)
	for name, feats := range map[string]Features{"probed": f, "mount2": {PageSize: f.PageSize}} {
		target, _ := checkTarget(t.TempDir())
		cleanupMount(t, target)
		_, err := mountStack(s, target, MountOptions{}, feats)
		t.Logf("%s: %v", name, err)
		if !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("%s: missing lower: %v, want ErrNotExist", name, err)
		} else if msg := err.Error(); strings.Contains(msg, "\n") || !strings.Contains(msg, l[1]) {
			t.Errorf("%s: want one line naming %s: %q", name, l[1], msg)
		}
	}
}

func TestMountKernelMessage(t *testing.T) {
	testutil.RequireOverlay(t)
	if f := probed(t); !f.NewMountAPI || !f.LowerdirPlus {
		t.Skip("fs_context messages come with the new mount API")
	}
	l := mkdirs(t, t.TempDir(), "l%d", 2)
	target, err := checkTarget(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	cleanupMount(t, target)
	err = Mount(mustStack(t, l), target, MountOptions{Extra: []string{"redirect_dir=bogus"}})
	if !errors.Is(err, unix.EINVAL) {
		t.Fatalf("Mount with a bad option: %v, want EINVAL", err)
	}
	t.Logf("error: %v", err)
	// The kernel's own explanation must reach the user.
	if !strings.Contains(err.Error(), "kernel:") || !strings.Contains(err.Error(), "redirect_dir") {
		t.Errorf("error lacks the kernel's message: %v", err)
	}
}

func TestMountConcurrentSameUpper(t *testing.T) {
	testutil.RequireOverlay(t)
	base := t.TempDir()
	l := mkdirs(t, base, "l%d", 2)
	uw := mkdirs(t, base, "uw%d", 2)
	s := mustStack(t, l, WithUpper(uw[0], uw[1]))
	const n = 4
	errs := make(chan error, n)
	for range n {
		target, err := checkTarget(t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		cleanupMount(t, target)
		go func() { errs <- Mount(s, target, MountOptions{}) }()
	}
	ok := 0
	for range n {
		err := <-errs
		switch {
		case err == nil:
			ok++
		case !errors.Is(err, ErrInUse):
			t.Errorf("Mount: %v, want success or ErrInUse", err)
		}
	}
	if ok != 1 {
		t.Errorf("%d of %d concurrent mounts of one upper succeeded, want 1", ok, n)
	}
}

func TestUnmountBusyNamesHolder(t *testing.T) {
	testutil.RequireOverlay(t)
	base := t.TempDir()
	l := mkdirs(t, base, "l%d", 2)
	writeFile(t, filepath.Join(l[0], "held"), "x")
	target, _ := mountT(t, mustStack(t, l), MountOptions{})
	fh, err := os.Open(filepath.Join(target, "held"))
	if err != nil {
		t.Fatal(err)
	}
	defer fh.Close()

	err = Unmount(target)
	if !errors.Is(err, ErrBusy) || !errors.Is(err, unix.EBUSY) {
		t.Fatalf("Unmount with an open file = %v, want ErrBusy", err)
	}
	t.Logf("error: %v", err)
	var be *BusyError
	if !errors.As(err, &be) {
		t.Fatalf("not a *BusyError: %T", err)
	}
	found := false
	for _, h := range be.Holders {
		if h.PID == os.Getpid() && strings.HasPrefix(h.Use, "fd ") {
			found = true
		}
	}
	if !found {
		t.Errorf("holders %+v lack this process (pid %d)", be.Holders, os.Getpid())
	}
	fh.Close()
	if err := Unmount(target); err != nil {
		t.Fatalf("Unmount after closing: %v", err)
	}
}

func TestUnmountDetach(t *testing.T) {
	testutil.RequireOverlay(t)
	l := mkdirs(t, t.TempDir(), "l%d", 2)
	target, _ := mountT(t, mustStack(t, l), MountOptions{})
	fh, err := os.Open(target)
	if err != nil {
		t.Fatal(err)
	}
	defer fh.Close()
	if err := Unmount(target, WithDetach()); err != nil {
		t.Fatalf("Unmount(WithDetach) of a busy mount: %v", err)
	}
	if mountedAt(t, target) != nil {
		t.Errorf("still in the tree after a detach")
	}
}

func TestUnmountDeadFUSE(t *testing.T) {
	testutil.RequireFUSE(t)
	target := t.TempDir()
	dev, err := unix.Open("/dev/fuse", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	opts := fmt.Sprintf("fd=%d,rootmode=40000,user_id=0,group_id=0", dev)
	if err := unix.Mount("strata-dead", target, "fuse.strata-test", 0, opts); err != nil {
		unix.Close(dev)
		t.Fatalf("mount fuse: %v", err)
	}
	cleanupMount(t, target)
	// No server ever answers; closing the device kills the connection.
	unix.Close(dev)
	if _, err := os.Stat(target); !errors.Is(err, unix.ENOTCONN) {
		t.Logf("stat of the dead mount: %v (expected ENOTCONN)", err)
	}
	if err := Unmount(target); err != nil {
		t.Fatalf("Unmount of a dead FUSE mount: %v", err)
	}
	if mountedAt(t, target) != nil {
		t.Errorf("dead FUSE mount still there")
	}
}

func TestParseMountinfo(t *testing.T) {
	in := `22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
45 22 0:39 / /mnt/with\040space rw,relatime - overlay overlay rw,lowerdir+=/l\054one,lowerdir+=/l2,upperdir=/u,workdir=/w,redirect_dir=on,fsync=volatile,userxattr
46 22 0:40 / /x rw master:3 propagation_source:2 - tmpfs tmpfs rw
`
	entries, err := parseMountinfo(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 3 {
		t.Fatalf("%d entries", len(entries))
	}
	e := entries[1]
	if e.ID != 45 || e.Parent != 22 || e.MountPoint != "/mnt/with space" || e.FSType != "overlay" {
		t.Errorf("entry %+v", e)
	}
	if got := e.option("lowerdir+"); !slices.Equal(got, []string{"/l,one", "/l2"}) {
		t.Errorf("lowerdir+ = %q", got)
	}
	if up, _ := e.lastOption("upperdir"); up != "/u" {
		t.Errorf("upperdir = %q", up)
	}
	if !e.hasFlag("userxattr") || e.hasFlag("volatile") {
		t.Errorf("flags wrong: %v", e.Super)
	}
	if v, ok := effectiveOption(&e, "redirect_dir"); !ok || v != "on" {
		t.Errorf("redirect_dir = %q, %v", v, ok)
	}
	if entries[2].FSType != "tmpfs" || entries[2].Source != "tmpfs" {
		t.Errorf("optional fields mishandled: %+v", entries[2])
	}
	if _, err := parseMountinfo(strings.NewReader("1 2 3\n")); err == nil {
		t.Errorf("malformed line accepted")
	}
	if use, d := findOverlayUse(entries, "/u", "/nowhere"); use == nil || d != "/u" || use.entry.ID != 45 {
		t.Errorf("findOverlayUse = %+v, %q", use, d)
	}
}

func TestLegacyDataEscapes(t *testing.T) {
	got := legacyData([]string{"/a:b", `/c,d\e`}, "/u,p", "/w", []string{"index=off"})
	want := `lowerdir=/a\:b:/c\,d\\e,upperdir=/u\,p,workdir=/w,index=off`
	if got != want {
		t.Errorf("legacyData = %s, want %s", got, want)
	}
	if c := commonDir([]string{"/x/y/a", "/x/y/b/c", "/x/y"}); c != "/x/y" {
		t.Errorf("commonDir = %s", c)
	}
}

// BenchmarkMount500Legacy times the mount(2) fallback on the same chain
// with short layer names relative to their parent (the only way it fits a
// page).
func BenchmarkMount500Legacy(b *testing.B) {
	testutil.RequireOverlay(b)
	f := probed(b)
	base := filepath.Join(b.TempDir(), strings.Repeat("p", 100))
	s := chain500(b, base, "L%03d", MaxKernelLowers)
	target, err := checkTarget(b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	cleanupMount(b, target)
	legacy := Features{PageSize: f.PageSize, Index: true, RedirectDir: f.RedirectDir, Metacopy: f.Metacopy, Xino: f.Xino}
	for b.Loop() {
		if _, err := mountStack(s, target, MountOptions{}, legacy); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		if err := Unmount(target); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
	b.ReportMetric(float64(b.Elapsed().Microseconds())/1000/float64(b.N), "ms/mount")
}

// BenchmarkMount500 times mounting (not unmounting) a chain of 500 lower
// layers and an upper with ~150-byte paths.
func BenchmarkMount500(b *testing.B) {
	testutil.RequireOverlay(b)
	base := filepath.Join(b.TempDir(), strings.Repeat("p", 100))
	s := chain500(b, base, "layer-with-a-long-descriptive-name-%04d", MaxKernelLowers)
	target := b.TempDir()
	cleanupMount(b, target)
	if _, err := Probe(); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for b.Loop() {
		if err := Mount(s, target, MountOptions{}); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		if err := Unmount(target); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
	b.ReportMetric(float64(b.Elapsed().Microseconds())/1000/float64(b.N), "ms/mount")
}
