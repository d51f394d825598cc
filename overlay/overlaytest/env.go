//go:build linux

package overlaytest

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/stratafs/strata/overlay"
)

// format is the overlay metadata encoding the suite writes and expects.
var format = overlay.Format{}

// env is one check's layers and mount.
type env struct {
	t      *testing.T
	b      Backend
	lowers []layer // topmost first
	upper  layer   // "" for a read-only env
	work   string
	m      Mounted
}

// newEnv makes n empty lower layer dirs and, unless readOnly, an upper and
// a work dir, all under one t.TempDir (so on one filesystem).
func newEnv(t *testing.T, b Backend, n int, readOnly bool) *env {
	t.Helper()
	base := t.TempDir()
	e := &env{t: t, b: b}
	for i := range n {
		e.lowers = append(e.lowers, layer{t, mkdir(t, filepath.Join(base, "l"+strconv.Itoa(i)))})
	}
	if !readOnly {
		e.upper = layer{t, mkdir(t, filepath.Join(base, "upper"))}
		e.work = mkdir(t, filepath.Join(base, "work"))
	}
	return e
}

func mkdir(t *testing.T, p string) string {
	t.Helper()
	if err := os.Mkdir(p, 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

// L returns lower layer i (0 is the topmost).
func (e *env) L(i int) layer { return e.lowers[i] }

// U returns the upper layer.
func (e *env) U() layer { return e.upper }

// layers returns the env's dirs as Layers.
func (e *env) layers() Layers {
	l := Layers{Upper: e.upper.root, Work: e.work}
	for _, x := range e.lowers {
		l.Lowers = append(l.Lowers, x.root)
	}
	return l
}

// mount mounts the layers through the backend; it returns the root.
func (e *env) mount() string {
	e.t.Helper()
	m := e.b.Mount(e.t, e.layers())
	// Backends unmount in their own cleanup; this one is belt and braces
	// and runs first, as cleanups run last-registered first.
	e.t.Cleanup(func() { m.Unmount(e.t) })
	e.m = m
	return m.Root()
}

// p returns the path of name in the union.
func (e *env) p(name string) string { return filepath.Join(e.m.Root(), name) }

func (e *env) unmount() { e.t.Helper(); e.m.Unmount(e.t) }
func (e *env) remount() { e.t.Helper(); e.m.Remount(e.t) }

// layer is a layer dir being built or inspected by a check.
type layer struct {
	t    *testing.T
	root string
}

func (l layer) p(name string) string { return filepath.Join(l.root, name) }

func (l layer) parents(name string) {
	l.t.Helper()
	if err := os.MkdirAll(filepath.Dir(l.p(name)), 0o755); err != nil {
		l.t.Fatal(err)
	}
}

// file writes a regular file (mode 0644) with data, making parents.
func (l layer) file(name, data string) layer {
	l.t.Helper()
	return l.fileMode(name, data, 0o644)
}

func (l layer) fileMode(name, data string, mode os.FileMode) layer {
	l.t.Helper()
	l.parents(name)
	if err := os.WriteFile(l.p(name), []byte(data), mode); err != nil {
		l.t.Fatal(err)
	}
	l.chmod(name, mode)
	return l
}

// dir makes a dir (mode 0755) and its parents.
func (l layer) dir(name string) layer {
	l.t.Helper()
	if err := os.MkdirAll(l.p(name), 0o755); err != nil {
		l.t.Fatal(err)
	}
	return l
}

func (l layer) symlink(target, name string) layer {
	l.t.Helper()
	l.parents(name)
	if err := os.Symlink(target, l.p(name)); err != nil {
		l.t.Fatal(err)
	}
	return l
}

func (l layer) link(oldname, newname string) layer {
	l.t.Helper()
	l.parents(newname)
	if err := os.Link(l.p(oldname), l.p(newname)); err != nil {
		l.t.Fatal(err)
	}
	return l
}

// whiteout makes a char-dev 0/0 whiteout.
func (l layer) whiteout(name string) layer {
	l.t.Helper()
	l.parents(name)
	if err := overlay.MakeWhiteout(filepath.Dir(l.p(name)), filepath.Base(name)); err != nil {
		l.t.Fatal(err)
	}
	return l
}

// xattrWhiteout makes an xattr-form whiteout: an empty file with the
// overlay "whiteout" xattr; its parent dir is marked opaque="x".
func (l layer) xattrWhiteout(name string) layer {
	l.t.Helper()
	l.file(name, "")
	l.setxattr(name, format.Xattr(overlay.XattrWhiteout), "")
	l.setxattr(filepath.Dir(name), format.Xattr(overlay.XattrOpaque), overlay.OpaqueXWhiteout)
	return l
}

// opaque makes dir name (if missing) and marks it opaque="y".
func (l layer) opaque(name string) layer {
	l.t.Helper()
	l.dir(name)
	if err := format.SetOpaque(l.p(name)); err != nil {
		l.t.Fatal(err)
	}
	return l
}

func (l layer) setxattr(name, key, value string) layer {
	l.t.Helper()
	if err := unix.Lsetxattr(l.p(name), key, []byte(value), 0); err != nil {
		l.t.Fatalf("setxattr %s %s: %v", l.p(name), key, err)
	}
	return l
}

func (l layer) chmod(name string, mode os.FileMode) layer {
	l.t.Helper()
	if err := unix.Chmod(l.p(name), uint32(mode.Perm())|unixModeBits(mode)); err != nil {
		l.t.Fatal(err)
	}
	return l
}

func (l layer) chown(name string, uid, gid int) layer {
	l.t.Helper()
	if err := os.Lchown(l.p(name), uid, gid); err != nil {
		l.t.Fatal(err)
	}
	return l
}

// mtime sets atime and mtime of name (not following symlinks).
func (l layer) mtime(name string, mt time.Time) layer {
	l.t.Helper()
	ts := []unix.Timespec{unix.NsecToTimespec(mt.UnixNano()), unix.NsecToTimespec(mt.UnixNano())}
	if err := unix.UtimesNanoAt(unix.AT_FDCWD, l.p(name), ts, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		l.t.Fatal(err)
	}
	return l
}

func unixModeBits(m os.FileMode) uint32 {
	var b uint32
	if m&os.ModeSetuid != 0 {
		b |= unix.S_ISUID
	}
	if m&os.ModeSetgid != 0 {
		b |= unix.S_ISGID
	}
	if m&os.ModeSticky != 0 {
		b |= unix.S_ISVTX
	}
	return b
}

// ---- assertions and probes, on any path (union or layer) ----

func lstat(t *testing.T, p string) unix.Stat_t {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Lstat(p, &st); err != nil {
		t.Fatalf("lstat %s: %v", p, err)
	}
	return st
}

func exists(t *testing.T, p string) bool {
	t.Helper()
	var st unix.Stat_t
	err := unix.Lstat(p, &st)
	if err != nil && !errors.Is(err, unix.ENOENT) {
		t.Fatalf("lstat %s: %v", p, err)
	}
	return err == nil
}

func wantAbsent(t *testing.T, p string) {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Lstat(p, &st); !errors.Is(err, unix.ENOENT) {
		t.Errorf("lstat %s: got err %v (mode %o), want ENOENT", p, err, st.Mode)
	}
}

func readFile(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	return string(b)
}

func wantContent(t *testing.T, p, want string) {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Errorf("read: %v", err)
		return
	}
	if string(b) != want {
		t.Errorf("%s: content %q, want %q", p, trunc(b), trunc([]byte(want)))
	}
}

func trunc(b []byte) string {
	if len(b) > 64 {
		return fmt.Sprintf("%s...(%d bytes)", b[:64], len(b))
	}
	return string(b)
}

func writeFile(t *testing.T, p, data string) {
	t.Helper()
	if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
		t.Fatalf("write: %v", err)
	}
}

// names lists dir, sorted, without . and ...
func names(t *testing.T, dir string) []string {
	t.Helper()
	f, err := os.Open(dir)
	if err != nil {
		t.Fatalf("open dir: %v", err)
	}
	defer func() { _ = f.Close() }() // read-only
	n, err := f.Readdirnames(-1)
	if err != nil {
		t.Fatalf("readdir %s: %v", dir, err)
	}
	slices.Sort(n)
	return n
}

func wantNames(t *testing.T, dir string, want ...string) {
	t.Helper()
	got := names(t, dir)
	if want == nil {
		want = []string{}
	}
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("readdir %s: got %q, want %q", dir, got, want)
	}
}

func isWhiteout(t *testing.T, p string) bool {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Lstat(p, &st); err != nil {
		return false
	}
	return overlay.IsWhiteoutStat(&st)
}

func wantWhiteout(t *testing.T, p string) {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Lstat(p, &st); err != nil {
		t.Errorf("want a whiteout at %s: %v", p, err)
		return
	}
	if !overlay.IsWhiteoutStat(&st) {
		t.Errorf("want a whiteout (char 0/0) at %s, got mode %o rdev %d", p, st.Mode, st.Rdev)
	}
}

func getxattr(p, key string) (string, error) {
	buf := make([]byte, 4096)
	n, err := unix.Lgetxattr(p, key, buf)
	if err != nil {
		return "", err
	}
	return string(buf[:n]), nil
}

func hasXattr(p, key string) bool {
	_, err := getxattr(p, key)
	return err == nil
}

func wantXattr(t *testing.T, p, key, want string) {
	t.Helper()
	v, err := getxattr(p, key)
	if err != nil {
		t.Errorf("getxattr %s %s: %v", p, key, err)
		return
	}
	if v != want {
		t.Errorf("getxattr %s %s = %q, want %q", p, key, v, want)
	}
}

func listxattr(t *testing.T, p string) []string {
	t.Helper()
	buf := make([]byte, 64<<10)
	n, err := unix.Llistxattr(p, buf)
	if err != nil {
		t.Fatalf("listxattr %s: %v", p, err)
	}
	var out []string
	for _, k := range bytes.Split(buf[:n], []byte{0}) {
		if len(k) > 0 {
			out = append(out, string(k))
		}
	}
	slices.Sort(out)
	return out
}

func wantErrno(t *testing.T, what string, err error, want unix.Errno) {
	t.Helper()
	if !errors.Is(err, want) {
		t.Errorf("%s: got %v, want %v", what, err, want)
	}
}

// extents returns the data extents of the file at p as [start, end) pairs,
// found with SEEK_DATA/SEEK_HOLE.
func extents(t *testing.T, p string) [][2]int64 {
	t.Helper()
	fd, err := unix.Open(p, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatalf("open %s: %v", p, err)
	}
	defer func() { _ = unix.Close(fd) }() // read-only
	var out [][2]int64
	var off int64
	for {
		d, err := unix.Seek(fd, off, unix.SEEK_DATA)
		if errors.Is(err, unix.ENXIO) {
			return out
		}
		if err != nil {
			t.Fatalf("SEEK_DATA %s @%d: %v", p, off, err)
		}
		h, err := unix.Seek(fd, d, unix.SEEK_HOLE)
		if err != nil {
			t.Fatalf("SEEK_HOLE %s @%d: %v", p, d, err)
		}
		out = append(out, [2]int64{d, h})
		off = h
	}
}

// allocated returns the bytes allocated to the file at p.
func allocated(t *testing.T, p string) int64 {
	t.Helper()
	st := lstat(t, p)
	return st.Blocks * 512
}

var (
	// fixedTime is the mtime given to lower objects whose times a check
	// compares; whole seconds, so that every backend can keep it.
	fixedTime = time.Date(2001, 2, 3, 4, 5, 6, 0, time.UTC)
	otherTime = time.Date(2011, 12, 13, 14, 15, 16, 0, time.UTC)
)

func mtimeOf(st unix.Stat_t) time.Time { return time.Unix(st.Mtim.Unix()) }

// closeFile closes f, which the test wrote or opened for writing, and
// fails the test if that fails: a close error there can be a lost write.
func closeFile(t *testing.T, f *os.File) {
	t.Helper()
	if err := f.Close(); err != nil {
		t.Errorf("close %s: %v", f.Name(), err)
	}
}

// mkdev is unix.Mkdev as the int unix.Mknod takes.
func mkdev(major, minor uint32) int {
	return int(unix.Mkdev(major, minor)) //nolint:gosec // a dev_t fits int on 64-bit Linux
}
