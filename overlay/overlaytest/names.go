//go:build linux

package overlaytest

import (
	"errors"
	"os"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/stratafs/strata/overlay"
)

func init() {
	register(map[string]func(*testing.T, Backend){
		"CreateOverWhiteout": CreateOverWhiteout,
		"UnlinkLower":        UnlinkLower,
		"RemoveAllLowerTree": RemoveAllLowerTree,
		"RenameFiles":        RenameFiles,
		"RenameLowerDir":     RenameLowerDir,
		"Symlinks":           Symlinks,
		"Hardlinks":          Hardlinks,
		"HardlinkCopyUp":     HardlinkCopyUp,
		"Mknod":              Mknod,
	})
}

// CreateOverWhiteout: creating a name that a whiteout hides (in a lower
// layer, or in upper after an unlink or rmdir) yields a fresh object that
// shows nothing of the older one, now and after a remount.
func CreateOverWhiteout(t *testing.T, b Backend) {
	e := newEnv(t, b, 2, false)
	e.L(0).whiteout("w").whiteout("wd")
	e.L(1).file("w", "old").file("wd/c", "old").file("u", "old").file("rd/c", "old").file("rd/s/x", "old").dir("ed")
	e.mount()

	wantAbsent(t, e.p("w"))
	writeFile(t, e.p("w"), "new")
	if err := os.Mkdir(e.p("wd"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(e.p("u")); err != nil {
		t.Fatal(err)
	}
	writeFile(t, e.p("u"), "new")
	if err := os.RemoveAll(e.p("rd")); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(e.p("rd"), 0o755); err != nil {
		t.Fatal(err)
	}
	writeFile(t, e.p("rd/n"), "new")
	if err := os.Remove(e.p("ed")); err != nil {
		t.Fatal(err)
	}
	writeFile(t, e.p("ed"), "file now")

	check := func() {
		t.Helper()
		wantContent(t, e.p("w"), "new")
		wantContent(t, e.p("u"), "new")
		wantNames(t, e.p("wd"))
		wantNames(t, e.p("rd"), "n")
		wantContent(t, e.p("ed"), "file now")
		wantNames(t, e.m.Root(), "ed", "rd", "u", "w", "wd")
	}
	check()

	e.unmount()
	for _, n := range []string{"w", "u", "ed"} {
		if st := lstat(t, e.U().p(n)); st.Mode&unix.S_IFMT != unix.S_IFREG {
			t.Errorf("upper %s: mode %o, want a regular file", n, st.Mode)
		}
	}
	op, err := format.DirOpacity(e.U().p("rd"))
	if err != nil || op != overlay.Opaque {
		t.Errorf("upper rd (mkdir after rm -rf of a lower dir): opacity %v, %v; want opaque", op, err)
	}
	op, err = format.DirOpacity(e.U().p("wd"))
	if err != nil {
		t.Fatal(err)
	}
	observe(t, b, OpaqueOnMkdirOverWhiteout, op == overlay.Opaque, "opacity of upper dir made over a lower-layer whiteout")

	e.remount()
	check()
}

// UnlinkLower: unlink and rmdir of lower objects hide them for good; what
// lands in upper is a char-dev 0/0 whiteout per removed name.
func UnlinkLower(t *testing.T, b Backend) {
	e := newEnv(t, b, 2, false)
	e.L(0).file("a", "l0").file("both", "l0").file("ne/x", "l0").dir("we").whiteout("we/x")
	e.L(1).file("b", "l1").file("both", "l1").symlink("b", "s").file("d/f", "l1").file("d/g", "l1").dir("ed").file("we/x", "l1")
	e.mount()

	writeFile(t, e.p("u"), "upper only")
	for _, n := range []string{"a", "b", "both", "s", "d/f", "u"} {
		if err := os.Remove(e.p(n)); err != nil {
			t.Errorf("unlink %s: %v", n, err)
		}
	}
	if err := os.Remove(e.p("ed")); err != nil {
		t.Errorf("rmdir of an empty lower dir: %v", err)
	}
	if err := os.Remove(e.p("we")); err != nil {
		t.Errorf("rmdir of a dir whose lower contents are all whited out: %v", err)
	}
	wantErrno(t, "rmdir of a non-empty lower dir", unix.Rmdir(e.p("ne")), unix.ENOTEMPTY)
	wantErrno(t, "unlink of a whited-out name", unix.Unlink(e.p("a")), unix.ENOENT)

	gone := []string{"a", "b", "both", "s", "d/f", "u", "ed", "we"}
	check := func() {
		t.Helper()
		for _, n := range gone {
			wantAbsent(t, e.p(n))
		}
		wantNames(t, e.m.Root(), "d", "ne")
		wantNames(t, e.p("d"), "g")
	}
	check()

	e.unmount()
	for _, n := range []string{"a", "b", "both", "s", "d/f", "ed", "we"} {
		wantWhiteout(t, e.U().p(n))
	}
	if exists(t, e.U().p("u")) && !isWhiteout(t, e.U().p("u")) {
		t.Errorf("upper u: an unlinked upper-only file is still there")
	}
	e.remount()
	check()
}

// RemoveAllLowerTree: rm -rf (os.RemoveAll) of a dir tree spread over
// lower layers and partly copied up leaves one whiteout in upper.
func RemoveAllLowerTree(t *testing.T, b Backend) {
	e := newEnv(t, b, 2, false)
	e.L(0).file("t/x", "l0").file("t/b/c", "l0").symlink("x", "t/l")
	e.L(1).file("t/a", "l1").file("t/b/c", "l1").file("t/b/d/e", "l1").file("t/b/d/f", "l1").dir("t/empty")
	e.L(1).file("keep", "l1")
	e.mount()

	writeFile(t, e.p("t/b/d/e"), "copied up") // part of the tree is in upper first
	writeFile(t, e.p("t/new"), "upper only")
	if err := os.RemoveAll(e.p("t")); err != nil {
		t.Fatalf("RemoveAll of a lower tree: %v", err)
	}
	wantAbsent(t, e.p("t"))
	wantNames(t, e.m.Root(), "keep")

	e.unmount()
	wantNames(t, e.U().root, "t")
	wantWhiteout(t, e.U().p("t"))
	e.remount()
	wantAbsent(t, e.p("t"))
	wantNames(t, e.m.Root(), "keep")
	// The name is free again, as a fresh empty dir.
	if err := os.Mkdir(e.p("t"), 0o700); err != nil {
		t.Fatal(err)
	}
	wantNames(t, e.p("t"))
}

// RenameFiles: rename of files across layers: lower to a new name, lower
// over lower, upper over lower, into a lower dir, and back over the
// whiteout the first rename left.
func RenameFiles(t *testing.T, b Backend) {
	e := newEnv(t, b, 2, false)
	e.L(0).file("d", "d-l0").file("m", "m-l0")
	e.L(1).file("a", "a-l1").file("c", "c-l1").file("e", "e-l1").file("dir/old", "l1")
	e.L(1).file("k", "k-l1").file("ren/x", "x").chown("ren/x", 1234, 5678).mtime("ren/x", fixedTime)
	e.mount()

	writeFile(t, e.p("n"), "n-upper")
	for _, r := range [][2]string{{"a", "b"}, {"c", "d"}, {"n", "e"}, {"m", "dir/m"}, {"b", "k"}, {"k", "a"}, {"ren/x", "ren/y"}} {
		if err := os.Rename(e.p(r[0]), e.p(r[1])); err != nil {
			t.Errorf("rename %s -> %s: %v", r[0], r[1], err)
		}
	}
	check := func() {
		t.Helper()
		wantContent(t, e.p("a"), "a-l1")
		wantContent(t, e.p("d"), "c-l1")
		wantContent(t, e.p("e"), "n-upper")
		wantContent(t, e.p("dir/m"), "m-l0")
		wantNames(t, e.m.Root(), "a", "d", "dir", "e", "ren")
		wantNames(t, e.p("dir"), "m", "old")
		wantNames(t, e.p("ren"), "y")
		st := lstat(t, e.p("ren/y"))
		if st.Uid != 1234 || st.Gid != 5678 || !mtimeOf(st).Equal(fixedTime) {
			t.Errorf("renamed lower file: owner %d:%d mtime %v, want 1234:5678 %v", st.Uid, st.Gid, mtimeOf(st), fixedTime)
		}
	}
	check()

	e.unmount()
	// Whiteouts for the lower names moved away; b only ever existed in
	// upper and needs none.
	for _, n := range []string{"c", "m", "k", "ren/x"} {
		wantWhiteout(t, e.U().p(n))
	}
	if exists(t, e.U().p("b")) && !isWhiteout(t, e.U().p("b")) {
		t.Errorf("upper b: renamed away but still there")
	}
	meta := hasXattr(e.U().p("ren/y"), format.Xattr(overlay.XattrMetacopy))
	observe(t, b, MetadataOnlyCopyUp, meta, "rename of a lower file")
	e.remount()
	check()
}

// RenameLowerDir: rename of a dir that exists in lower layers. The
// content follows the dir (redirect_dir=on), or rename fails with EXDEV
// and nothing changes (the kernel without redirect_dir).
func RenameLowerDir(t *testing.T, b Backend) {
	e := newEnv(t, b, 2, false)
	e.L(0).file("a/x", "x").file("a/sub/y", "y").file("p/keep", "")
	e.L(1).file("a/z", "z").file("a/sub/w", "w").dir("p/q")
	e.mount()

	err := os.Rename(e.p("a"), e.p("b"))
	if errors.Is(err, unix.EXDEV) {
		observe(t, b, RenameDirEXDEV, true, "rename(2) of a lower dir")
		wantNames(t, e.p("a"), "sub", "x", "z")
		wantAbsent(t, e.p("b"))
		return
	}
	if err != nil {
		t.Fatalf("rename of a lower dir: %v", err)
	}
	observe(t, b, RenameDirEXDEV, false, "rename(2) of a lower dir")
	writeFile(t, e.p("b/new"), "new")
	// A second rename, into another (lower) dir: the kernel stores an
	// absolute redirect here.
	if err := os.Rename(e.p("b/sub"), e.p("p/q/moved")); err != nil {
		t.Fatalf("rename of a lower subdir into another lower dir: %v", err)
	}
	check := func() {
		t.Helper()
		wantAbsent(t, e.p("a"))
		wantNames(t, e.m.Root(), "b", "p")
		wantNames(t, e.p("b"), "new", "x", "z")
		wantContent(t, e.p("b/z"), "z")
		wantNames(t, e.p("p/q"), "moved")
		wantNames(t, e.p("p/q/moved"), "w", "y")
		wantContent(t, e.p("p/q/moved/w"), "w")
	}
	check()

	e.unmount()
	wantWhiteout(t, e.U().p("a"))
	for _, d := range []string{"b", "p/q/moved"} {
		redirect, rerr := getxattr(e.U().p(d), format.Xattr(overlay.XattrRedirect))
		if rerr == nil {
			observe(t, b, RenameDirByRedirect, true, "upper "+d+" has redirect "+redirect)
			continue
		}
		observe(t, b, RenameDirByRedirect, false, "upper "+d+" has no redirect xattr")
		if op, err := format.DirOpacity(e.U().p(d)); err != nil || op != overlay.Opaque {
			t.Errorf("upper %s: neither a redirect nor an opaque copy (opacity %v, %v)", d, op, err)
		}
	}
	e.remount()
	check()
}

// Symlinks: lower symlinks read back and lstat as such; new symlinks
// work; a metadata change copies a symlink up with its target.
func Symlinks(t *testing.T, b Backend) {
	e := newEnv(t, b, 1, false)
	e.L(0).file("target", "data").symlink("target", "ln").symlink("nope", "dangling").
		file("d/f", "f").symlink("d", "dl").symlink("../target", "d/up")
	e.mount()

	for name, want := range map[string]string{"ln": "target", "dangling": "nope", "dl": "d", "d/up": "../target"} {
		got, err := os.Readlink(e.p(name))
		if err != nil || got != want {
			t.Errorf("readlink %s = %q, %v; want %q", name, got, err, want)
		}
		st := lstat(t, e.p(name))
		if st.Mode&unix.S_IFMT != unix.S_IFLNK || st.Size != int64(len(want)) {
			t.Errorf("lstat %s: mode %o size %d, want a symlink of size %d", name, st.Mode, st.Size, len(want))
		}
	}
	wantContent(t, e.p("ln"), "data")
	wantContent(t, e.p("d/up"), "data")
	wantNames(t, e.p("dl"), "f", "up")
	_, err := os.Stat(e.p("dangling"))
	wantErrno(t, "stat of a dangling symlink", err, unix.ENOENT)

	if err := os.Symlink("target", e.p("new")); err != nil {
		t.Fatal(err)
	}
	if err := os.Lchown(e.p("ln"), 1234, 5678); err != nil {
		t.Fatalf("lchown of a lower symlink: %v", err)
	}
	check := func() {
		t.Helper()
		for name, want := range map[string]string{"ln": "target", "new": "target"} {
			if got, err := os.Readlink(e.p(name)); err != nil || got != want {
				t.Errorf("readlink %s = %q, %v; want %q", name, got, err, want)
			}
		}
		if st := lstat(t, e.p("ln")); st.Uid != 1234 || st.Gid != 5678 {
			t.Errorf("lstat ln: owner %d:%d, want 1234:5678", st.Uid, st.Gid)
		}
	}
	check()
	e.unmount()
	for _, n := range []string{"ln", "new"} {
		if got, err := os.Readlink(e.U().p(n)); err != nil || got != "target" {
			t.Errorf("upper %s: readlink %q, %v; want a symlink to target", n, got, err)
		}
	}
	e.remount()
	check()
}

// Hardlinks: names hard-linked inside a lower layer share st_ino and show
// st_nlink; links made through the union behave as on any filesystem.
func Hardlinks(t *testing.T, b Backend) {
	e := newEnv(t, b, 1, false)
	e.L(0).file("h1", "lower").link("h1", "h2").link("h1", "sub/h3").file("other", "x").file("l", "lower-l")
	e.mount()

	s1, s2, s3, so := lstat(t, e.p("h1")), lstat(t, e.p("h2")), lstat(t, e.p("sub/h3")), lstat(t, e.p("other"))
	if s1.Ino != s2.Ino || s1.Ino != s3.Ino || s1.Ino == so.Ino {
		t.Errorf("lower hard links: ino %d %d %d (other %d), want the first three equal", s1.Ino, s2.Ino, s3.Ino, so.Ino)
	}
	if s1.Nlink != 3 || so.Nlink != 1 {
		t.Errorf("lower hard links: nlink %d (other %d), want 3 (1)", s1.Nlink, so.Nlink)
	}

	// Links of new upper files.
	writeFile(t, e.p("u1"), "one")
	if err := os.Link(e.p("u1"), e.p("u2")); err != nil {
		t.Fatal(err)
	}
	writeFile(t, e.p("u2"), "two")
	// A link of a lower file (copies it up first).
	if err := os.Link(e.p("l"), e.p("l2")); err != nil {
		t.Fatalf("link of a lower file: %v", err)
	}
	check := func() {
		t.Helper()
		wantContent(t, e.p("u1"), "two")
		wantContent(t, e.p("l2"), "lower-l")
		for _, pair := range [][2]string{{"u1", "u2"}, {"l", "l2"}} {
			a, b := lstat(t, e.p(pair[0])), lstat(t, e.p(pair[1]))
			if a.Ino != b.Ino || a.Nlink != 2 || b.Nlink != 2 {
				t.Errorf("%s, %s: ino %d %d nlink %d %d; want one ino, nlink 2", pair[0], pair[1], a.Ino, b.Ino, a.Nlink, b.Nlink)
			}
		}
	}
	check()
	if err := os.Remove(e.p("u2")); err != nil {
		t.Fatal(err)
	}
	if st := lstat(t, e.p("u1")); st.Nlink != 1 {
		t.Errorf("u1 after unlink of u2: nlink %d, want 1", st.Nlink)
	}
	e.unmount()
	a, c := lstat(t, e.U().p("l")), lstat(t, e.U().p("l2"))
	if a.Ino != c.Ino {
		t.Errorf("upper l, l2: ino %d %d, want one inode", a.Ino, c.Ino)
	}
	e.remount()
	wantContent(t, e.p("l2"), "lower-l")
}

// HardlinkCopyUp: a write to one name of a hard-linked lower file. The
// kernel with index=off breaks the link (the other names keep the old
// data, quirk HardlinkBreaksOnCopyUp); a backend that keeps it shows the
// new data under every name with one st_ino. Nothing else is accepted.
func HardlinkCopyUp(t *testing.T, b Backend) {
	e := newEnv(t, b, 1, false)
	e.L(0).file("h1", "old").link("h1", "h2")
	e.mount()

	writeFile(t, e.p("h1"), "new")
	var broken bool
	check := func(when string) {
		t.Helper()
		wantContent(t, e.p("h1"), "new")
		s1, s2 := lstat(t, e.p("h1")), lstat(t, e.p("h2"))
		switch got := readFile(t, e.p("h2")); got {
		case "old":
			broken = true
			if s1.Ino == s2.Ino {
				t.Errorf("%s: h2 keeps the old data but shares st_ino %d with h1", when, s1.Ino)
			}
		case "new":
			broken = false
			if s1.Ino != s2.Ino || s1.Nlink != 2 || s2.Nlink != 2 {
				t.Errorf("%s: link kept, but ino %d %d nlink %d %d", when, s1.Ino, s2.Ino, s1.Nlink, s2.Nlink)
			}
		default:
			t.Errorf("%s: h2 = %q, want %q (link kept) or %q (link broken)", when, got, "new", "old")
		}
	}
	check("after copy-up")
	observe(t, b, HardlinkBreaksOnCopyUp, broken, "write to one of two hard-linked lower names")
	before := broken
	e.remount()
	check("after remount")
	if broken != before {
		t.Errorf("hard link broken=%v after copy-up, but broken=%v after remount", before, broken)
	}
}

// Mknod: fifos and device nodes made through the union land in upper as
// such, also over a whited-out name.
func Mknod(t *testing.T, b Backend) {
	e := newEnv(t, b, 1, false)
	e.L(0).file("was", "file")
	e.mount()

	if err := os.Remove(e.p("was")); err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"p", "was"} {
		if err := unix.Mkfifo(e.p(n), 0o640); err != nil {
			t.Fatalf("mkfifo %s: %v", n, err)
		}
	}
	if err := unix.Mknod(e.p("c"), unix.S_IFCHR|0o600, mkdev(1, 3)); err != nil {
		t.Fatalf("mknod char device: %v", err)
	}
	check := func(root string) {
		t.Helper()
		for _, n := range []string{"p", "was"} {
			if st := lstat(t, root+"/"+n); st.Mode&unix.S_IFMT != unix.S_IFIFO || st.Mode&0o777 != 0o640 {
				t.Errorf("%s/%s: mode %o, want a fifo 0640", root, n, st.Mode)
			}
		}
		if st := lstat(t, root+"/c"); st.Mode&unix.S_IFMT != unix.S_IFCHR || st.Rdev != unix.Mkdev(1, 3) {
			t.Errorf("%s/c: mode %o rdev %#x, want char device 1:3", root, st.Mode, st.Rdev)
		}
	}
	check(e.m.Root())
	wantNames(t, e.m.Root(), "c", "p", "was")
	e.unmount()
	check(e.U().root)
	e.remount()
	check(e.m.Root())
}
