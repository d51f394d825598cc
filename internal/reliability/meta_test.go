package reliability

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/stratafs/strata/internal/fstree"
	"github.com/stratafs/strata/internal/testutil"
)

// metaEntry is one entry of a lower layer in the metamorphic test.
type metaEntry struct {
	path   string
	kind   byte // 'f' file, 'd' dir, 'D' opaque dir, 'l' symlink, 'w' whiteout, 'h' hard link to body
	body   string
	mode   uint32
	xattrs []string // k, v, ...
}

// metaLayers are the metamorphic test's lowers, bottom first.
var metaLayers = [][]metaEntry{
	{
		{path: "d1", kind: 'd', mode: 0o755},
		{path: "d1/a", kind: 'f', body: "bottom a\n", mode: 0o644, xattrs: []string{"user.k", "v1"}},
		{path: "d1/b", kind: 'f', body: "bottom b\n", mode: 0o600},
		{path: "d1/sub", kind: 'd', mode: 0o755},
		{path: "d1/sub/c", kind: 'f', body: "bottom c\n", mode: 0o644},
		{path: "d2", kind: 'd', mode: 0o755},
		{path: "d2/a", kind: 'f', body: "bottom d2a\n", mode: 0o644},
		{path: "d2/b", kind: 'f', body: strings.Repeat("long ", 3000), mode: 0o644},
		{path: "d2/h1", kind: 'f', body: "hard-linked in the lower\n", mode: 0o644},
		{path: "d2/h2", kind: 'h', body: "d2/h1"},
		{path: "d4", kind: 'd', mode: 0o755},
		{path: "d4/g", kind: 'f', body: "hidden by opaque\n", mode: 0o644},
		{path: "x", kind: 'f', body: "x\n", mode: 0o755},
		{path: "s", kind: 'l', body: "d1/a"},
	},
	{
		{path: "d1", kind: 'd', mode: 0o755},
		{path: "d1/b", kind: 'f', body: "middle b\n", mode: 0o640},
		{path: "d2", kind: 'd', mode: 0o755},
		{path: "d2/a", kind: 'w'},
		{path: "d3", kind: 'd', mode: 0o700},
		{path: "d3/e", kind: 'f', body: "middle e\n", mode: 0o644},
		{path: "d4", kind: 'D', mode: 0o755},
		{path: "d4/f", kind: 'f', body: "middle f\n", mode: 0o644},
	},
	{
		{path: "d1", kind: 'd', mode: 0o755},
		{path: "d1/sub", kind: 'd', mode: 0o755},
		{path: "d1/sub/c", kind: 'f', body: "top c\n", mode: 0o600},
		{path: "top", kind: 'f', body: "top\n", mode: 0o644, xattrs: []string{"user.t", "tv"}},
	},
}

// buildLayer writes es into dir. As a lower layer (model false) whiteouts
// are char devices 0/0 and opaque dirs carry trusted.overlay.opaque=y; as
// the flattened model (model true) they remove what is below.
func buildLayer(t *testing.T, dir string, es []metaEntry, model bool) {
	t.Helper()
	for _, e := range es {
		p := filepath.Join(dir, e.path)
		var err error
		switch e.kind {
		case 'f':
			os.Remove(p)
			if err = os.WriteFile(p, []byte(e.body), 0o600); err == nil {
				err = os.Chmod(p, os.FileMode(e.mode))
			}
		case 'd', 'D':
			if e.kind == 'D' && model {
				os.RemoveAll(p)
			}
			if err = os.MkdirAll(p, 0o700); err == nil {
				err = os.Chmod(p, os.FileMode(e.mode))
			}
			if err == nil && e.kind == 'D' && !model {
				err = unix.Setxattr(p, "trusted.overlay.opaque", []byte("y"), 0)
			}
		case 'l':
			os.Remove(p)
			err = os.Symlink(e.body, p)
		case 'h':
			// With index=off a copy-up breaks a lower hard link: the
			// names change independently. The model holds two files.
			if model {
				var b []byte
				if b, err = os.ReadFile(filepath.Join(dir, e.body)); err == nil {
					err = os.WriteFile(p, b, 0o644)
				}
			} else {
				err = os.Link(filepath.Join(dir, e.body), p)
			}
		case 'w':
			if model {
				err = os.RemoveAll(p)
			} else {
				err = unix.Mknod(p, unix.S_IFCHR, 0)
			}
		}
		for i := 0; err == nil && i+1 < len(e.xattrs); i += 2 {
			err = unix.Lsetxattr(p, e.xattrs[i], []byte(e.xattrs[i+1]), 0)
		}
		if err != nil {
			t.Fatalf("build %s: %v", p, err)
		}
	}
}

// metaOp is one filesystem operation, applied alike to every root.
type metaOp struct {
	kind string
	a, b string
	off  int64
	data []byte
	mode uint32
	time time.Time
}

func (o metaOp) String() string {
	s := o.kind + " " + o.a
	if o.b != "" {
		s += " " + o.b
	}
	switch o.kind {
	case "write", "rofd", "fdrename", "unlinkopen":
		s += fmt.Sprintf(" off=%d len=%d", o.off, len(o.data))
	case "truncate":
		s += fmt.Sprintf(" size=%d", o.off)
	case "chmod", "create", "mkdir":
		s += fmt.Sprintf(" mode=%#o", o.mode)
	case "utimes":
		s += " " + o.time.UTC().Format(time.RFC3339)
	case "setxattr":
		s += fmt.Sprintf(" %q", o.data)
	}
	return s
}

// applyOut runs o under root and returns its errno and, for "rofd", what
// the read-only fd read after the write.
func (o metaOp) applyOut(root string) (unix.Errno, string) {
	a, b := filepath.Join(root, o.a), filepath.Join(root, o.b)
	var err error
	var out string
	switch o.kind {
	case "exchange":
		err = unix.Renameat2(unix.AT_FDCWD, a, unix.AT_FDCWD, b, unix.RENAME_EXCHANGE)
	case "noreplace":
		err = unix.Renameat2(unix.AT_FDCWD, a, unix.AT_FDCWD, b, unix.RENAME_NOREPLACE)
	case "fdrename":
		// Write through an fd across a rename of its file.
		var fd int
		if fd, err = unix.Open(a, unix.O_RDWR|unix.O_CLOEXEC|unix.O_NOFOLLOW, 0); err != nil {
			break
		}
		if err = unix.Rename(a, b); err == nil {
			_, err = unix.Pwrite(fd, o.data, o.off)
		}
		if cerr := unix.Close(fd); err == nil {
			err = cerr
		}
	case "unlinkopen":
		// Read through an fd after its file is unlinked.
		var fd int
		if fd, err = unix.Open(a, unix.O_RDONLY|unix.O_CLOEXEC|unix.O_NOFOLLOW, 0); err != nil {
			break
		}
		if err = unix.Unlink(a); err == nil {
			buf := make([]byte, 64)
			var n int
			n, err = unix.Pread(fd, buf, o.off)
			out = string(buf[:max(n, 0)])
		}
		unix.Close(fd)
	case "rofd":
		// A read-only fd opened before a write (the write copies a lower
		// file up) reads what was written.
		var rfd, wfd int
		if rfd, err = unix.Open(a, unix.O_RDONLY|unix.O_CLOEXEC|unix.O_NOFOLLOW, 0); err != nil {
			break
		}
		buf := make([]byte, 64)
		unix.Pread(rfd, buf, 0) // fill the page cache from the lower file
		if wfd, err = unix.Open(a, unix.O_WRONLY|unix.O_CLOEXEC, 0); err == nil {
			if _, err = unix.Pwrite(wfd, o.data, o.off); err == nil {
				err = unix.Close(wfd)
			} else {
				unix.Close(wfd)
			}
		}
		if err == nil {
			var n int
			n, err = unix.Pread(rfd, buf, 0)
			out = string(buf[:max(n, 0)])
		}
		unix.Close(rfd)
	case "create":
		var fd int
		fd, err = unix.Open(a, unix.O_CREAT|unix.O_WRONLY|unix.O_TRUNC|unix.O_CLOEXEC, o.mode)
		if err == nil {
			if _, err = unix.Write(fd, o.data); err == nil {
				err = unix.Close(fd)
			} else {
				unix.Close(fd)
			}
		}
	case "write":
		var fd int
		fd, err = unix.Open(a, unix.O_WRONLY|unix.O_CLOEXEC, 0)
		if err == nil {
			if _, err = unix.Pwrite(fd, o.data, o.off); err == nil {
				err = unix.Close(fd)
			} else {
				unix.Close(fd)
			}
		}
	case "truncate":
		err = unix.Truncate(a, o.off)
	case "mkdir":
		err = unix.Mkdir(a, o.mode)
	case "rmdir":
		err = unix.Rmdir(a)
	case "unlink":
		err = unix.Unlink(a)
	case "rename":
		err = unix.Rename(a, b)
	case "symlink":
		err = unix.Symlink(o.b, a)
	case "link":
		err = unix.Link(a, b)
	case "chmod":
		err = unix.Chmod(a, o.mode)
	case "utimes":
		ts := unix.NsecToTimespec(o.time.UnixNano())
		err = unix.UtimesNanoAt(unix.AT_FDCWD, a, []unix.Timespec{ts, ts}, unix.AT_SYMLINK_NOFOLLOW)
	case "setxattr":
		err = unix.Lsetxattr(a, "user.m", o.data, 0)
	default:
		panic(o.kind)
	}
	var en unix.Errno
	if err != nil && !errors.As(err, &en) {
		return unix.EIO, out
	}
	return en, out
}

// metaNames are the names random ops use: few, so that ops collide.
var metaNames = []string{"a", "b", "c", "e", "f", "n"}

// genOp makes a random op from the current tree (paths of the oracle).
func genOp(rng *rand.Rand, tree fstree.Tree) metaOp {
	var all, dirs, files []string
	for p, n := range tree {
		all = append(all, p)
		if n.Type.IsDir() {
			dirs = append(dirs, p)
		}
		if n.Type == 0 {
			files = append(files, p)
		}
	}
	sort.Strings(all)
	sort.Strings(dirs)
	sort.Strings(files)
	dirs = append(dirs, ".")
	existing := func() string {
		if len(all) == 0 || rng.IntN(10) == 0 {
			return fresh(rng, dirs)
		}
		return all[rng.IntN(len(all))]
	}
	// file is mostly a regular file, sometimes anything.
	file := func() string {
		if len(files) == 0 || rng.IntN(5) == 0 {
			return existing()
		}
		return files[rng.IntN(len(files))]
	}
	any := func() string {
		if rng.IntN(2) == 0 {
			return existing()
		}
		return fresh(rng, dirs)
	}
	data := func(max int) []byte {
		b := make([]byte, rng.IntN(max+1))
		for i := range b {
			b[i] = byte('A' + rng.IntN(26))
		}
		return b
	}
	modes := []uint32{0o600, 0o644, 0o755, 0o700, 0o640, 0o4755}
	kinds := []string{"create", "write", "write", "truncate", "mkdir", "rmdir", "unlink", "rename", "rename", "symlink", "link", "chmod", "utimes", "setxattr", "exchange", "noreplace", "fdrename", "unlinkopen", "rofd"}
	o := metaOp{kind: kinds[rng.IntN(len(kinds))]}
	switch o.kind {
	case "create":
		o.a, o.data, o.mode = any(), data(5000), modes[rng.IntN(3)]
	case "write":
		o.a, o.data, o.off = file(), data(9000), int64(rng.IntN(20000))
	case "truncate":
		o.a, o.off = file(), int64(rng.IntN(20000))
	case "mkdir":
		o.a, o.mode = fresh(rng, dirs), 0o755
	case "rmdir", "unlink":
		o.a = existing()
	case "rename", "noreplace":
		o.a, o.b = existing(), any()
	case "exchange":
		// Files and symlinks only: RENAME_EXCHANGE of a dir with lower
		// contents fails EXDEV on strata FUSE by design (fuse/doc.go).
		o.a, o.b = file(), file()
		if n := tree[o.a]; n != nil && n.Type.IsDir() {
			o.kind = "rename"
		}
		if n := tree[o.b]; n != nil && n.Type.IsDir() {
			o.kind = "rename"
		}
	case "rofd", "unlinkopen":
		o.a, o.data, o.off = file(), data(30), int64(rng.IntN(40))
	case "fdrename":
		o.a, o.b, o.data, o.off = file(), any(), data(30), int64(rng.IntN(40))
	case "link":
		o.a, o.b = file(), any()
	case "symlink":
		// Relative targets without "..": following one never leaves
		// the root.
		o.a, o.b = fresh(rng, dirs), metaNames[rng.IntN(len(metaNames))]
		if rng.IntN(2) == 0 && len(all) > 0 {
			o.b = all[rng.IntN(len(all))]
			if d := path.Dir(o.a); d != "." {
				o.b = path.Base(o.b)
			}
		}
	case "chmod":
		o.a, o.mode = file(), modes[rng.IntN(len(modes))]
	case "utimes":
		o.a = existing()
		o.time = time.Date(2001, 1, 1, 0, 0, 0, 0, time.UTC).Add(time.Duration(rng.IntN(1e6)) * time.Second)
	case "setxattr":
		o.a, o.data = file(), data(40)
	}
	return o
}

func fresh(rng *rand.Rand, dirs []string) string {
	return path.Join(dirs[rng.IntN(len(dirs))], metaNames[rng.IntN(len(metaNames))])
}

// metaSnapshot is the visible tree under root, normalised: no root entry,
// no trusted./security. xattrs, mtimes only when set by utimes (before
// 2010).
func metaSnapshot(t *testing.T, root string) fstree.Tree {
	t.Helper()
	tr, err := fstree.Snapshot(root, fstree.WithoutRoot(), fstree.WithoutXattrs(func(n string) bool {
		return strings.HasPrefix(n, "trusted.") || strings.HasPrefix(n, "security.")
	}))
	if err != nil {
		t.Fatalf("snapshot %s: %v", root, err)
	}
	cut := time.Date(2010, 1, 1, 0, 0, 0, 0, time.UTC)
	for _, n := range tr {
		if !n.Mtime.Before(cut) {
			n.Mtime = time.Time{}
		}
		n.Atime = time.Time{}
	}
	return tr
}

// TestMetamorphic applies random op sequences to kernel overlayfs, strata
// FUSE and a plain dir (the flattened lowers) and compares the visible
// trees after every step. The kernel is the oracle: FUSE must match it in
// errno and tree; the plain dir must match its tree (an op the kernel
// refuses is not applied to the plain dir). STRATA_META_SEED runs one seed,
// STRATA_META_STEPS sets the steps per seed (default 60; 3 seeds, or 20
// seeds x 300 steps with STRATA_STRESS=1).
func TestMetamorphic(t *testing.T) {
	testutil.RequireFUSE(t)
	testutil.RequireOverlay(t)
	seeds := []uint64{1, 2, 3}
	steps := 60
	if stress() {
		steps = 300
		seeds = nil
		for i := uint64(1); i <= 20; i++ {
			seeds = append(seeds, i)
		}
	}
	if os.Getenv("STRATA_META_SEED") != "" {
		seeds = []uint64{uint64(envInt(t, "STRATA_META_SEED", 1))}
	}
	steps = int(envInt(t, "STRATA_META_STEPS", int64(steps)))
	total := 0
	for _, seed := range seeds {
		t.Run(fmt.Sprint("seed", seed), func(t *testing.T) {
			n := runMeta(t, seed, steps)
			total += n
		})
	}
	t.Logf("metamorphic: %d seeds, %d steps per backend without divergence", len(seeds), total)
}

func runMeta(t *testing.T, seed uint64, steps int) int {
	base := t.TempDir()
	lowers := make([]string, len(metaLayers))
	for i := range metaLayers {
		// lowers[] is topmost first.
		lowers[len(metaLayers)-1-i] = filepath.Join(base, fmt.Sprintf("lower%d", i))
	}
	for i, es := range metaLayers {
		d := lowers[len(metaLayers)-1-i]
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		buildLayer(t, d, es, false)
	}
	model := filepath.Join(base, "model")
	if err := os.MkdirAll(model, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, es := range metaLayers {
		buildLayer(t, model, es, true)
	}
	mk := func(name string) fuseSpec {
		sp := fuseSpec{Lowers: lowers, Upper: filepath.Join(base, name, "upper"), Work: filepath.Join(base, name, "work"), Target: filepath.Join(base, name, "mnt")}
		for _, d := range []string{sp.Upper, sp.Work, sp.Target} {
			if err := os.MkdirAll(d, 0o755); err != nil {
				t.Fatal(err)
			}
		}
		return sp
	}
	ksp, fsp := mk("kernel"), mk("fuse")
	kunmount := mountKernel(t, ksp)
	funmount := mountFUSEChild(t, fsp)
	kern, fus := ksp.Target, fsp.Target

	check := func(step int, op string, hist []string) bool {
		kt := metaSnapshot(t, kern)
		ft, mt := metaSnapshot(t, fus), metaSnapshot(t, model)
		metacopyMtime(kt, ft)
		metacopyMtime(kt, mt)
		if d := fstree.Diff(kt, ft); len(d) > 0 {
			t.Errorf("seed %d step %d (%s): FUSE tree differs from kernel overlayfs (a=kernel, b=fuse):\n  %s\nops:\n  %s\nrerun: STRATA_META_SEED=%d STRATA_META_STEPS=%d go test -run TestMetamorphic ./internal/reliability/",
				seed, step, op, strings.Join(d, "\n  "), strings.Join(hist, "\n  "), seed, step+1)
			return false
		}
		// The model's lower hard links are separate files (see 'h'), so
		// link sharing is compared between kernel and FUSE only.
		if d := fstree.Diff(noLinks(kt), noLinks(mt)); len(d) > 0 {
			t.Errorf("seed %d step %d (%s): plain-dir model differs from kernel overlayfs (a=kernel, b=model):\n  %s\nops:\n  %s\nrerun: STRATA_META_SEED=%d STRATA_META_STEPS=%d",
				seed, step, op, strings.Join(d, "\n  "), strings.Join(hist, "\n  "), seed, step+1)
			return false
		}
		return true
	}
	if !check(-1, "initial", nil) {
		return 0
	}
	rng := rand.New(rand.NewPCG(seed, 0x5eed))
	var hist []string
	okOps := 0
	defer func() { t.Logf("seed %d: %d ops succeeded on the kernel", seed, okOps) }()
	for step := 0; step < steps; step++ {
		op := genOp(rng, metaSnapshot(t, kern))
		ke, kout := op.applyOut(kern)
		fe, fout := op.applyOut(fus)
		me, mout := unix.Errno(0), kout
		if ke == 0 {
			okOps++
			me, mout = op.applyOut(model)
		}
		hist = append(hist, fmt.Sprintf("%d: %s -> kernel %v, fuse %v", step, op, errName(ke), errName(fe)))
		if ke != fe {
			t.Errorf("seed %d step %d: %s: kernel %v, FUSE %v\nops:\n  %s\nrerun: STRATA_META_SEED=%d STRATA_META_STEPS=%d",
				seed, step, op, errName(ke), errName(fe), strings.Join(hist, "\n  "), seed, step+1)
			return step
		}
		if kout != fout || kout != mout {
			t.Errorf("seed %d step %d: %s: read back kernel %q, FUSE %q, plain dir %q\nops:\n  %s\nrerun: STRATA_META_SEED=%d STRATA_META_STEPS=%d",
				seed, step, op, kout, fout, mout, strings.Join(hist, "\n  "), seed, step+1)
			return step
		}
		if me != 0 {
			t.Errorf("seed %d step %d: %s: kernel succeeded, plain dir %v\nops:\n  %s", seed, step, op, errName(me), strings.Join(hist, "\n  "))
			return step
		}
		if !check(step, op.String(), hist) {
			return step
		}
	}
	if os.Getenv("STRATA_META_VERBOSE") == "1" {
		t.Logf("ops:\n  %s", strings.Join(hist, "\n  "))
	}
	// Same format: swap the uppers. Kernel overlayfs over the upper FUSE
	// wrote, and FUSE over the kernel's, show the same tree.
	want := metaSnapshot(t, kern)
	kunmount()
	funmount()
	ksp.Target, fsp.Target = fsp.Target, ksp.Target
	mountKernel(t, fsp)
	mountFUSEChild(t, ksp)
	if d := fstree.Diff(want, metaSnapshot(t, fsp.Target)); len(d) > 0 {
		t.Errorf("seed %d: kernel overlayfs over the upper FUSE wrote differs (a=before, b=after):\n  %s", seed, strings.Join(d, "\n  "))
	}
	if d := fstree.Diff(want, metaSnapshot(t, ksp.Target)); len(d) > 0 {
		t.Errorf("seed %d: FUSE over the upper kernel overlayfs wrote differs (a=before, b=after):\n  %s", seed, strings.Join(d, "\n  "))
	}
	return steps
}

// metacopyMtime encodes a kernel rule: after a metadata-only copy-up
// (metacopy=on; utimes, chmod or setxattr of a lower file) the data
// copy-up of a later open for write stamps the file's mtime with the
// current time, where strata FUSE (which never writes metacopy files) and
// a plain dir keep the mtime set by utimes (e.g. seed 11, step 39 before
// this rule: utimes x, then open x O_RDWR and close). Where the kernel
// shows a current mtime (zeroed by metaSnapshot) for a regular file and
// other shows a set one, other's is zeroed too.
//
// Dirs likewise: a rename the kernel refuses (ENOTEMPTY for the target)
// may first copy the source up, which stamps the parent dir's mtime (seed
// 4 step 115 of an earlier op set: utimes a, then rename a/sub onto a
// non-empty dir).
func metacopyMtime(kernel, other fstree.Tree) {
	for p, k := range kernel {
		if o := other[p]; o != nil && k.Type == o.Type && (k.Type == 0 || k.Type.IsDir()) && k.Mtime.IsZero() {
			o.Mtime = time.Time{}
		}
	}
}

func noLinks(tr fstree.Tree) fstree.Tree {
	out := fstree.Tree{}
	for p, n := range tr {
		c := *n
		c.Link = ""
		out[p] = &c
	}
	return out
}

func errName(e unix.Errno) string {
	if e == 0 {
		return "ok"
	}
	return unix.ErrnoName(e)
}
