//go:build linux

package overlaytest

import (
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/stratafs/strata/overlay"
)

func init() {
	register(map[string]func(*testing.T, Backend){
		"InoStable":      InoStable,
		"DevConsistent":  DevConsistent,
		"PermissionBits": PermissionBits,
		"Statfs":         Statfs,
		"Xattrs":         Xattrs,
	})
}

// InoStable: st_ino across copy-up (recorded: quirks InoChangesOnCopyUp,
// DirInoChangesOnCopyUp) and across remount (required, for every kind of
// object).
func InoStable(t *testing.T, b Backend) {
	e := newEnv(t, b, 2, false)
	e.L(0).file("f", "f").file("g", "g").file("d/c", "c").symlink("f", "s")
	e.L(1).file("m/x", "x").file("m/y", "y")
	e.L(0).dir("m")
	e.mount()

	objs := []string{".", "f", "g", "d", "d/c", "s", "m", "m/x"}
	ino := func() map[string]uint64 {
		t.Helper()
		out := map[string]uint64{}
		for _, n := range objs {
			out[n] = lstat(t, e.p(n)).Ino
		}
		return out
	}
	before := ino()
	seen := map[uint64]string{}
	for _, n := range objs {
		if prev, dup := seen[before[n]]; dup {
			t.Errorf("%s and %s share st_ino %d", prev, n, before[n])
		}
		seen[before[n]] = n
	}

	if err := os.Chmod(e.p("f"), 0o600); err != nil { // metadata copy-up
		t.Fatal(err)
	}
	writeFile(t, e.p("g"), "new")                     // data copy-up
	writeFile(t, e.p("d/new"), "")                    // dir copy-up
	writeFile(t, e.p("m/new"), "")                    // copy-up of a dir merged from two lowers
	if err := os.Lchown(e.p("s"), 1, 1); err != nil { // symlink copy-up
		t.Fatal(err)
	}
	writeFile(t, e.p("n"), "upper only")
	objs = append(objs, "d/new", "n")
	after := ino()
	for _, n := range []string{"f", "g", "s"} {
		observe(t, b, InoChangesOnCopyUp, after[n] != before[n], "st_ino of "+n+": "+strconv.FormatUint(before[n], 10)+" -> "+strconv.FormatUint(after[n], 10))
	}
	for _, n := range []string{"d", "m"} {
		observe(t, b, DirInoChangesOnCopyUp, after[n] != before[n], "st_ino of dir "+n+": "+strconv.FormatUint(before[n], 10)+" -> "+strconv.FormatUint(after[n], 10))
	}
	for _, n := range []string{".", "d/c", "m/x"} {
		if after[n] != before[n] {
			t.Errorf("st_ino of %s (not copied up) changed: %d -> %d", n, before[n], after[n])
		}
	}

	e.remount()
	again := ino()
	for _, n := range objs {
		if again[n] != after[n] {
			t.Errorf("st_ino of %s changed across remount: %d -> %d", n, after[n], again[n])
		}
	}
}

// DevConsistent: every object in the mount reports the st_dev of the
// mount's root, wherever it comes from.
func DevConsistent(t *testing.T, b Backend) {
	e := newEnv(t, b, 2, false)
	e.L(0).file("l0", "").dir("ld").symlink("l0", "ls").file("m/a", "")
	e.L(1).file("l1", "").file("m/b", "").file("cu", "")
	e.mount()
	writeFile(t, e.p("u"), "")
	if err := os.Mkdir(e.p("ud"), 0o755); err != nil {
		t.Fatal(err)
	}
	writeFile(t, e.p("cu"), "copied up")
	if err := unix.Mkfifo(e.p("p"), 0o644); err != nil {
		t.Fatal(err)
	}

	root := lstat(t, e.m.Root())
	for _, n := range []string{"l0", "ld", "ls", "m", "m/a", "m/b", "l1", "cu", "u", "ud", "p"} {
		if st := lstat(t, e.p(n)); st.Dev != root.Dev {
			t.Errorf("%s: st_dev %#x, root's is %#x", n, st.Dev, root.Dev)
		}
	}
	// fstat agrees with lstat.
	f, err := os.Open(e.p("l1"))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = f.Close() }() // read-only
	var fst unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &fst); err != nil {
		t.Fatal(err)
	}
	if st := lstat(t, e.p("l1")); fst.Dev != st.Dev || fst.Ino != st.Ino {
		t.Errorf("fstat l1: dev/ino %#x/%d, lstat says %#x/%d", fst.Dev, fst.Ino, st.Dev, st.Ino)
	}
}

// PermissionBits: mode bits of lower objects (setuid, setgid, sticky
// included) show through and survive copy-up; chmod through the union
// sticks.
func PermissionBits(t *testing.T, b Backend) {
	e := newEnv(t, b, 1, false)
	modes := map[string]os.FileMode{
		"f600": 0o600, "f640": 0o640, "f755": 0o755, "f000": 0,
		"suid": 0o755 | os.ModeSetuid, "sgid": 0o750 | os.ModeSetgid,
	}
	for n, m := range modes {
		e.L(0).fileMode(n, n, m)
	}
	e.L(0).dir("sticky").chmod("sticky", 0o777|os.ModeSticky).dir("d700").chmod("d700", 0o700)
	want := map[string]uint32{"f600": 0o600, "f640": 0o640, "f755": 0o755, "f000": 0,
		"suid": 0o4755, "sgid": 0o2750, "sticky": 0o1777, "d700": 0o700}
	e.mount()

	check := func(where, root string) {
		t.Helper()
		for n, m := range want {
			if st := lstat(t, root+"/"+n); st.Mode&0o7777 != m {
				t.Errorf("%s %s: mode %o, want %o", where, n, st.Mode&0o7777, m)
			}
		}
	}
	check("union", e.m.Root())
	// Copy up by open-for-write (root keeps setuid: CAP_FSETID).
	for _, n := range []string{"suid", "sgid", "f000"} {
		f, err := os.OpenFile(e.p(n), os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		closeFile(t, f)
	}
	if err := os.Chmod(e.p("f640"), 0o604); err != nil {
		t.Fatal(err)
	}
	want["f640"] = 0o604
	if err := os.Mkdir(e.p("sticky/sub"), 0o755); err != nil { // copies up the sticky dir
		t.Fatal(err)
	}
	check("union after copy-up", e.m.Root())
	e.unmount()
	for _, n := range []string{"suid", "sgid", "f000", "f640", "sticky"} {
		if st := lstat(t, e.U().p(n)); st.Mode&0o7777 != want[n] {
			t.Errorf("upper %s: mode %o, want %o", n, st.Mode&0o7777, want[n])
		}
	}
	e.remount()
	check("union after remount", e.m.Root())
}

// Statfs: statfs works on the mount and on objects inside it.
func Statfs(t *testing.T, b Backend) {
	e := newEnv(t, b, 1, false)
	e.L(0).file("d/f", "x")
	e.mount()
	for _, n := range []string{".", "d", "d/f"} {
		var s unix.Statfs_t
		if err := unix.Statfs(e.p(n), &s); err != nil {
			t.Errorf("statfs %s: %v", n, err)
			continue
		}
		if s.Bsize <= 0 || s.Blocks == 0 || s.Bfree > s.Blocks || s.Namelen <= 0 {
			t.Errorf("statfs %s: bsize %d blocks %d bfree %d namelen %d", n, s.Bsize, s.Blocks, s.Bfree, s.Namelen)
		}
	}
	f, err := os.Open(e.p("d/f"))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = f.Close() }() // read-only
	var s unix.Statfs_t
	if err := unix.Fstatfs(int(f.Fd()), &s); err != nil {
		t.Errorf("fstatfs: %v", err)
	}
}

// Xattrs: user xattrs of lower files and dirs show through (overlay
// xattrs never do), survive copy-up, and set/remove through the union
// sticks.
func Xattrs(t *testing.T, b Backend) {
	e := newEnv(t, b, 1, false)
	big := strings.Repeat("v", 3000)
	e.L(0).file("f", "x").setxattr("f", "user.a", "1").setxattr("f", "user.b", big)
	e.L(0).dir("d").setxattr("d", "user.d", "dir").opaque("o").setxattr("o", "user.o", "o")
	e.mount()

	// wantList checks the user.* xattrs of p; in the union (not in a
	// layer) no overlay xattr may show.
	wantList := func(p string, union bool, want ...string) {
		t.Helper()
		var got []string
		for _, k := range listxattr(t, p) {
			if overlay.IsOverlayXattr(k) {
				if union {
					t.Errorf("listxattr %s shows overlay xattr %s", p, k)
				}
				continue
			}
			if strings.HasPrefix(k, "user.") {
				got = append(got, k)
			}
		}
		if !slices.Equal(got, want) {
			t.Errorf("listxattr %s: user xattrs %q, want %q", p, got, want)
		}
	}
	wantList(e.p("f"), true, "user.a", "user.b")
	wantList(e.p("o"), true, "user.o")
	wantXattr(t, e.p("f"), "user.b", big)
	if _, err := getxattr(e.p("o"), "trusted.overlay.opaque"); err == nil {
		t.Errorf("getxattr trusted.overlay.opaque through the union succeeds")
	}

	if err := unix.Setxattr(e.p("f"), "user.c", []byte("3"), 0); err != nil {
		t.Fatal(err)
	}
	if err := unix.Removexattr(e.p("f"), "user.a"); err != nil {
		t.Fatalf("removexattr of a lower file's xattr: %v", err)
	}
	if err := unix.Setxattr(e.p("d"), "user.d2", []byte("2"), 0); err != nil {
		t.Fatal(err)
	}
	err := unix.Removexattr(e.p("f"), "user.nope")
	wantErrno(t, "removexattr of a missing xattr", err, unix.ENODATA)

	check := func(root string, union bool) {
		t.Helper()
		wantList(root+"/f", union, "user.b", "user.c")
		wantXattr(t, root+"/f", "user.b", big)
		wantXattr(t, root+"/f", "user.c", "3")
		wantList(root+"/d", union, "user.d", "user.d2")
	}
	check(e.m.Root(), true)
	e.unmount()
	check(e.U().root, false)
	e.remount()
	check(e.m.Root(), true)
}
