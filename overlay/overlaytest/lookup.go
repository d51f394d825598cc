//go:build linux

package overlaytest

import (
	"errors"
	"os"
	"slices"
	"strconv"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/stratafs/strata/overlay"
)

func init() {
	register(map[string]func(*testing.T, Backend){
		"LookupPrecedence":  LookupPrecedence,
		"WhiteoutCharDev":   WhiteoutCharDev,
		"WhiteoutXattr":     WhiteoutXattr,
		"OpaqueDir":         OpaqueDir,
		"ReaddirMerge":      ReaddirMerge,
		"ReaddirStable":     ReaddirStable,
		"ReadOnlyMount":     ReadOnlyMount,
		"SpecialFilesLower": SpecialFilesLower,
	})
}

// LookupPrecedence: the topmost layer that has a name wins, whatever the
// types in the layers below.
func LookupPrecedence(t *testing.T, b Backend) {
	e := newEnv(t, b, 3, false)
	e.U().file("all", "upper")
	e.L(0).file("all", "l0").file("l012", "l0").file("l0", "l0")
	e.L(1).file("all", "l1").file("l012", "l1").file("l12", "l1")
	e.L(2).file("all", "l2").file("l012", "l2").file("l12", "l2").file("l2", "l2")
	// A file over a dir, a dir over a file, a symlink over a file.
	e.L(0).file("fileoverdir", "file")
	e.L(1).file("fileoverdir/inner", "hidden")
	e.L(0).dir("diroverfile").file("diroverfile/a", "a")
	e.L(2).file("diroverfile", "hidden")
	e.L(1).symlink("all", "linkoverfile")
	e.L(2).file("linkoverfile", "hidden")
	e.mount()

	for name, want := range map[string]string{
		"all": "upper", "l012": "l0", "l12": "l1", "l0": "l0", "l2": "l2", "fileoverdir": "file",
	} {
		wantContent(t, e.p(name), want)
	}
	if st := lstat(t, e.p("diroverfile")); st.Mode&unix.S_IFMT != unix.S_IFDIR {
		t.Errorf("diroverfile: mode %o, want a dir", st.Mode)
	}
	wantNames(t, e.p("diroverfile"), "a")
	if st := lstat(t, e.p("linkoverfile")); st.Mode&unix.S_IFMT != unix.S_IFLNK {
		t.Errorf("linkoverfile: mode %o, want a symlink", st.Mode)
	}
	wantContent(t, e.p("linkoverfile"), "upper")
	wantNames(t, e.m.Root(), "all", "diroverfile", "fileoverdir", "l0", "l012", "l12", "l2", "linkoverfile")
	var st unix.Stat_t
	wantErrno(t, "stat fileoverdir/inner", unix.Lstat(e.p("fileoverdir/inner"), &st), unix.ENOTDIR)
}

// WhiteoutCharDev: a char-dev 0/0 whiteout hides the name in every layer
// below it, but not in layers above; the whiteout itself never shows.
func WhiteoutCharDev(t *testing.T, b Backend) {
	e := newEnv(t, b, 3, false)
	e.L(0).whiteout("gone").file("back", "l0").whiteout("d/gone")
	e.L(1).whiteout("back").file("gone", "l1").whiteout("dir").file("d/gone", "l1").file("d/kept", "l1")
	e.L(2).file("gone", "l2").file("back", "l2").file("dir/a", "l2").file("d/gone", "l2")
	e.U().whiteout("upperwo")
	e.L(2).file("upperwo", "l2")
	e.mount()

	for _, n := range []string{"gone", "dir", "dir/a", "d/gone", "upperwo"} {
		wantAbsent(t, e.p(n))
	}
	wantContent(t, e.p("back"), "l0")
	wantNames(t, e.m.Root(), "back", "d")
	wantNames(t, e.p("d"), "kept")
}

// WhiteoutXattr: in a lower layer, an empty regular file with the overlay
// "whiteout" xattr is a whiteout if its parent dir is marked opaque="x";
// the parent is not opaque. Without the parent's marker it is a plain file.
func WhiteoutXattr(t *testing.T, b Backend) {
	e := newEnv(t, b, 2, false)
	e.L(0).xattrWhiteout("d/f").file("d/own", "l0")
	e.L(1).file("d/f", "l1").file("d/g", "l1")
	// The same xattr without the parent's marker.
	e.L(0).file("nomark/f", "")
	e.L(0).setxattr("nomark/f", format.Xattr("whiteout"), "")
	e.L(1).file("nomark/f", "l1")
	e.mount()

	wantAbsent(t, e.p("d/f"))
	wantNames(t, e.p("d"), "g", "own")
	wantContent(t, e.p("d/g"), "l1")
	// Readdir honours the xattr form only under the marker, so the name
	// is listed; lookup must then find it as an empty file, but the
	// kernel's lookup ignores the marker (quirk).
	wantNames(t, e.p("nomark"), "f")
	var st unix.Stat_t
	switch err := unix.Lstat(e.p("nomark/f"), &st); {
	case err == nil:
		observe(t, b, XattrWhiteoutIgnoresMarkerOnLookup, false, "unmarked xattr whiteout is a plain file to lookup and readdir")
		wantContent(t, e.p("nomark/f"), "")
	case errors.Is(err, unix.ENOENT):
		observe(t, b, XattrWhiteoutIgnoresMarkerOnLookup, true, "readdir lists nomark/f but lstat fails ENOENT")
	default:
		t.Errorf("lstat nomark/f: %v", err)
	}

	// Creating the name again in the union brings a new file.
	writeFile(t, e.p("d/f"), "new")
	wantContent(t, e.p("d/f"), "new")
	wantNames(t, e.p("d"), "f", "g", "own")
}

// OpaqueDir: an opaque dir hides the contents of the same dir in all
// lower layers, but not layers above it.
func OpaqueDir(t *testing.T, b Backend) {
	e := newEnv(t, b, 3, false)
	e.L(0).file("o/top", "l0")
	e.L(1).opaque("o").file("o/mid", "l1").file("o/sub/x", "l1")
	e.L(2).file("o/low", "l2").file("o/sub/y", "l2").file("o/mid", "l2")
	e.U().opaque("u").file("u/new", "upper")
	e.L(0).file("u/old", "l0")
	e.mount()

	wantNames(t, e.p("o"), "mid", "sub", "top")
	wantContent(t, e.p("o/mid"), "l1")
	wantNames(t, e.p("o/sub"), "x")
	wantAbsent(t, e.p("o/low"))
	wantNames(t, e.p("u"), "new")
	wantAbsent(t, e.p("u/old"))
	// The overlay xattr does not show through the union.
	for _, k := range listxattr(t, e.p("o")) {
		if overlay.IsOverlayXattr(k) {
			t.Errorf("listxattr through the union shows %s", k)
		}
	}
}

// ReaddirMerge: readdir lists the union of names, each once, minus
// whiteouts, with exact name sets at every level and the right types.
func ReaddirMerge(t *testing.T, b Backend) {
	e := newEnv(t, b, 3, false)
	e.U().file("d/u1", "").file("d/both", "upper").whiteout("d/l0only")
	e.L(0).file("d/l0only", "").file("d/both", "").file("d/l0", "").whiteout("d/l1wo").dir("d/sub")
	e.L(1).file("d/l1wo", "").file("d/l1", "").file("d/both", "").file("d/sub/s1", "")
	e.L(2).file("d/l1wo", "").file("d/l2", "").file("d/sub/s2", "").whiteout("d/nothing")
	for i := range 40 { // enough entries to need more than one getdents batch
		e.L(i%3).file("big/f"+strconv.Itoa(i), "")
		e.L((i+1)%3).file("big/f"+strconv.Itoa(i), "")
	}
	e.mount()

	wantNames(t, e.p("d"), "both", "l0", "l1", "l2", "sub", "u1")
	wantNames(t, e.p("d/sub"), "s1", "s2")
	var want []string
	for i := range 40 {
		want = append(want, "f"+strconv.Itoa(i))
	}
	wantNames(t, e.p("big"), want...)
	// Types from readdir agree with lstat.
	ents, err := os.ReadDir(e.p("d"))
	if err != nil {
		t.Fatal(err)
	}
	for _, de := range ents {
		st := lstat(t, e.p("d/"+de.Name()))
		if isDir := st.Mode&unix.S_IFMT == unix.S_IFDIR; isDir != de.IsDir() {
			t.Errorf("readdir type of %s: dir=%v, lstat says dir=%v", de.Name(), de.IsDir(), isDir)
		}
	}
	// Changes through the union show in the next listing.
	if err := os.Remove(e.p("d/l1")); err != nil {
		t.Fatal(err)
	}
	writeFile(t, e.p("d/n"), "")
	wantNames(t, e.p("d"), "both", "l0", "l2", "n", "sub", "u1")
}

// ReaddirStable: reading a merged dir in small batches yields each name
// exactly once, in the same order as one big read, and twice the same.
func ReaddirStable(t *testing.T, b Backend) {
	e := newEnv(t, b, 2, false)
	for i := range 50 {
		e.L(i%2).file("d/n"+strconv.Itoa(i), "")
	}
	e.U().file("d/u", "")
	e.mount()

	read := func(batch int) []string {
		f, err := os.Open(e.p("d"))
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = f.Close() }() // read-only
		var out []string
		for {
			n, err := f.Readdirnames(batch)
			out = append(out, n...)
			if err != nil || len(n) == 0 {
				break
			}
		}
		return out
	}
	a, b2, c := read(-1), read(-1), read(7)
	if len(a) != 51 {
		t.Errorf("readdir: %d names, want 51", len(a))
	}
	if !slices.Equal(a, b2) {
		t.Errorf("two listings differ in order:\n%q\n%q", a, b2)
	}
	sc := slices.Clone(c)
	slices.Sort(sc)
	if len(slices.Compact(sc)) != len(c) {
		t.Errorf("batched listing repeats names: %q", c)
	}
	if !slices.Equal(a, c) {
		t.Errorf("batched listing differs from a full one:\n%q\n%q", a, c)
	}
}

// ReadOnlyMount: with no upper layer the union is read-only (EROFS) and
// still merges its lowers.
func ReadOnlyMount(t *testing.T, b Backend) {
	e := newEnv(t, b, 2, true)
	e.L(0).file("a", "l0").whiteout("b").dir("d")
	e.L(1).file("a", "l1").file("b", "l1").file("c", "l1").file("d/x", "l1")
	e.mount()

	wantNames(t, e.m.Root(), "a", "c", "d")
	wantContent(t, e.p("a"), "l0")
	wantNames(t, e.p("d"), "x")
	_, err := os.OpenFile(e.p("a"), os.O_WRONLY, 0)
	wantErrno(t, "open for write", err, unix.EROFS)
	wantErrno(t, "create", os.WriteFile(e.p("new"), nil, 0o644), unix.EROFS)
	wantErrno(t, "unlink", os.Remove(e.p("c")), unix.EROFS)
	wantErrno(t, "chmod", os.Chmod(e.p("c"), 0o600), unix.EROFS)
	wantErrno(t, "mkdir", os.Mkdir(e.p("nd"), 0o755), unix.EROFS)
	wantErrno(t, "rename", os.Rename(e.p("a"), e.p("z")), unix.EROFS)
}

// SpecialFilesLower: fifos and device nodes of lower layers show through
// as they are; a char device other than 0/0 is not a whiteout.
func SpecialFilesLower(t *testing.T, b Backend) {
	e := newEnv(t, b, 1, false)
	if err := unix.Mkfifo(e.L(0).p("fifo"), 0o640); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mknod(e.L(0).p("null"), unix.S_IFCHR|0o666, mkdev(1, 3)); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mknod(e.L(0).p("blk"), unix.S_IFBLK|0o600, mkdev(7, 200)); err != nil {
		t.Fatal(err)
	}
	e.L(0).chmod("fifo", 0o640).chmod("null", 0o666).chmod("blk", 0o600) // undo the umask
	e.mount()

	wantNames(t, e.m.Root(), "blk", "fifo", "null")
	for name, want := range map[string]struct {
		typ, perm uint32
		rdev      uint64
	}{
		"fifo": {unix.S_IFIFO, 0o640, 0},
		"null": {unix.S_IFCHR, 0o666, unix.Mkdev(1, 3)},
		"blk":  {unix.S_IFBLK, 0o600, unix.Mkdev(7, 200)},
	} {
		st := lstat(t, e.p(name))
		if st.Mode&unix.S_IFMT != want.typ || st.Mode&0o7777 != want.perm || st.Rdev != want.rdev {
			t.Errorf("%s: mode %o rdev %#x, want type %o perm %o rdev %#x", name, st.Mode, st.Rdev, want.typ, want.perm, want.rdev)
		}
	}
	// The device node works through the union (needs no copy-up).
	f, err := os.OpenFile(e.p("null"), os.O_WRONLY, 0)
	if err != nil {
		t.Fatalf("open char device through the union: %v", err)
	}
	if _, err := f.Write([]byte("x")); err != nil {
		t.Errorf("write to /dev/null clone: %v", err)
	}
	closeFile(t, f)
	// A fifo in a lower layer opens (non-blocking read end).
	fd, err := unix.Open(e.p("fifo"), unix.O_RDONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Errorf("open fifo through the union: %v", err)
	} else {
		_ = unix.Close(fd) // a fifo read end
	}
}
