package overlay

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/stratafs/strata/internal/testutil"
	"golang.org/x/sys/unix"
)

// objMeta is what copy-up must preserve of one object.
type objMeta struct {
	mode, uid, gid uint32
	rdev           uint64
	atim, mtim     unix.Timespec
	size           int64
	xattrs         map[string]string // overlay xattrs excluded
	data           string            // regular files: data; symlinks: target
}

func readMeta(t *testing.T, p string) objMeta {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Lstat(p, &st); err != nil {
		t.Fatal(err)
	}
	m := objMeta{mode: st.Mode, uid: st.Uid, gid: st.Gid, rdev: st.Rdev, atim: st.Atim, mtim: st.Mtim, xattrs: map[string]string{}}
	if st.Mode&unix.S_IFMT != unix.S_IFDIR {
		m.size = st.Size
	}
	names, err := listXattrs(p)
	if err != nil {
		t.Fatal(err)
	}
	var buf []byte
	for _, n := range names {
		if IsOverlayXattr(n) || n == "security.selinux" {
			continue
		}
		v, err := getxattrBytes(p, n, &buf)
		if err != nil {
			t.Fatal(err)
		}
		m.xattrs[n] = string(v)
	}
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFREG:
		if st.Size < 1<<20 {
			b, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			m.data = string(b)
		}
	case unix.S_IFLNK:
		m.data, _ = os.Readlink(p)
	}
	return m
}

func setMeta(t *testing.T, p string, mode fs.FileMode, uid, gid int, sec int64, xattrs ...string) {
	t.Helper()
	if err := os.Lchown(p, uid, gid); err != nil {
		t.Fatal(err)
	}
	if mode != 0 {
		if err := unix.Chmod(p, uint32(mode)); err != nil {
			t.Fatal(err)
		}
	}
	for i := 0; i+1 < len(xattrs); i += 2 {
		if err := unix.Lsetxattr(p, xattrs[i], []byte(xattrs[i+1]), 0); err != nil {
			t.Fatalf("setxattr %s on %s: %v", xattrs[i], p, err)
		}
	}
	// atime in the future: relatime leaves it alone when the tests read.
	ts := []unix.Timespec{{Sec: time.Now().Unix() + 3600, Nsec: 123456789}, {Sec: sec + 1, Nsec: 987654321}}
	if err := unix.UtimesNanoAt(unix.AT_FDCWD, p, ts, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		t.Fatal(err)
	}
}

func TestCopyUpTypes(t *testing.T) {
	testutil.RequireOverlay(t)
	s := fixture{upper: []string{}, lowers: [][]string{{
		"f dir/sub/f hello", "s dir/sub/l f", "f dir/sub/sparse", "f dir/sub/hard x", "d dir/sub/d2", "f dir/sub/d2/child c",
	}}}.build(t)
	low := filepath.Join(s.Lowers()[0], "dir", "sub")
	for _, mk := range []struct {
		name string
		mode uint32
		dev  int
	}{{"fifo", unix.S_IFIFO | 0o640, 0}, {"chr", unix.S_IFCHR | 0o600, int(unix.Mkdev(1, 3))}, {"blk", unix.S_IFBLK | 0o660, int(unix.Mkdev(7, 0))}} {
		if err := unix.Mknod(filepath.Join(low, mk.name), mk.mode, mk.dev); err != nil {
			t.Fatal(err)
		}
	}
	// A 1 GiB sparse file with three data islands.
	sp := filepath.Join(low, "sparse")
	if err := os.Truncate(sp, 1<<30); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(sp, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, off := range []int64{0, 512 << 20, 1<<30 - 5} {
		if _, err := f.WriteAt([]byte("data!"), off); err != nil {
			t.Fatal(err)
		}
	}
	f.Close()
	if err := os.Link(filepath.Join(low, "hard"), filepath.Join(low, "hard2")); err != nil {
		t.Fatal(err)
	}
	setMeta(t, filepath.Join(low, "hard"), 0, 19, 20, 1.6e9)
	setMeta(t, filepath.Join(s.Lowers()[0], "dir"), 0o751, 21, 22, 1e9, "user.dir", "1", "trusted.overlay.opaque", "x")
	setMeta(t, low, 0o750, 11, 12, 1.1e9, "user.sub", "2", "trusted.sub", "t")
	setMeta(t, filepath.Join(low, "f"), 0o4755, 1234, 5678, 1.2e9, "user.a", "1", "trusted.b", "2", "security.capability", "\x01\x00\x00\x02\x00\x20\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00")
	setMeta(t, filepath.Join(low, "l"), 0, 13, 14, 1.3e9, "trusted.l", "3")
	setMeta(t, filepath.Join(low, "d2"), 0o700, 15, 16, 1.4e9)
	for _, n := range []string{"fifo", "chr", "blk", "sparse"} {
		setMeta(t, filepath.Join(low, n), 0, 17, 18, 1.5e9, "trusted.n", n)
	}
	objs := []string{"dir/sub/f", "dir/sub/l", "dir/sub/sparse", "dir/sub/fifo", "dir/sub/chr", "dir/sub/blk", "dir/sub/d2", "dir/sub/hard"}
	want := map[string]objMeta{}
	for _, p := range append(objs, "dir", "dir/sub") {
		want[p] = readMeta(t, filepath.Join(s.Lowers()[0], p))
	}
	before := unionTree(t, s)
	for _, p := range objs {
		e, err := s.CopyUp(p)
		if err != nil {
			t.Fatalf("CopyUp(%q): %v", p, err)
		}
		if e.Layer != 0 || e.RealPath != filepath.Join(s.Upper(), p) {
			t.Fatalf("CopyUp(%q) served from layer %d at %s", p, e.Layer, e.RealPath)
		}
	}
	for _, p := range append(objs, "dir", "dir/sub") {
		got := readMeta(t, filepath.Join(s.Upper(), p))
		if fmt.Sprint(got) != fmt.Sprint(want[p]) {
			t.Errorf("%s:\n got  %+v\n want %+v", p, got, want[p])
		}
	}
	var st unix.Stat_t
	if err := unix.Lstat(filepath.Join(s.Upper(), "dir/sub/sparse"), &st); err != nil {
		t.Fatal(err)
	}
	if st.Size != 1<<30 || st.Blocks*512 > 1<<20 {
		t.Errorf("sparse copy: size %d, %d bytes allocated; want 1 GiB with holes", st.Size, st.Blocks*512)
	}
	b := make([]byte, 5)
	sf, _ := os.Open(filepath.Join(s.Upper(), "dir/sub/sparse"))
	for _, off := range []int64{0, 512 << 20, 1<<30 - 5} {
		if _, err := sf.ReadAt(b, off); err != nil || string(b) != "data!" {
			t.Errorf("sparse data at %d: %q %v", off, b, err)
		}
	}
	sf.Close()
	// Copy-up of a dir copies no children; the union keeps them.
	if _, err := os.Lstat(filepath.Join(s.Upper(), "dir/sub/d2/child")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("dir copy-up copied a child: %v", err)
	}
	// Hard links break on copy-up (index=off): hard2 stays in the lower.
	if e, err := s.Lookup("dir/sub/hard2"); err != nil || e.Layer != 1 {
		t.Errorf("hard2: %+v %v", e, err)
	}
	if err := unix.Lstat(filepath.Join(s.Upper(), "dir/sub/hard"), &st); err != nil || st.Nlink != 1 {
		t.Errorf("upper hard: nlink %d %v", st.Nlink, err)
	}
	after := unionTree(t, s)
	diffTrees(t, after, before)
	leftovers(t, s)
	compareWithKernel(t, s)
}

// leftovers fails if the work dir holds strata temporaries.
func leftovers(t *testing.T, s *Stack) {
	t.Helper()
	ents, _ := os.ReadDir(filepath.Join(s.Work(), workTmpDir))
	for _, e := range ents {
		t.Errorf("leftover in work dir: %s", e.Name())
	}
}

func TestCopyUpMetacopyUpper(t *testing.T) {
	testutil.RequireRoot(t)
	s := fixture{upper: []string{"f meta", "t meta 6", "m meta", "c meta 600", "X user.m meta 1"},
		lowers: [][]string{{"f meta l3meta"}}}.build(t)
	e, err := s.CopyUp("meta")
	if err != nil {
		t.Fatal(err)
	}
	if e.Metacopy || e.DataPath != e.RealPath || e.Layer != 0 {
		t.Fatalf("after copy-up: %+v", e)
	}
	got := readMeta(t, e.RealPath)
	if got.data != "l3meta" || got.mode&0o777 != 0o600 || got.xattrs["user.m"] != "1" {
		t.Errorf("full copy: %+v", got)
	}
	if _, ok, _ := getxattr(e.RealPath, Format{}.Xattr(XattrMetacopy)); ok {
		t.Error("metacopy xattr kept")
	}
}

func TestCopyUpCrash(t *testing.T) {
	testutil.RequireRoot(t)
	s := fixture{upper: []string{}, lowers: [][]string{{"f a/b data", "f a/c data"}}}.build(t)
	crash := errors.New("simulated crash")
	testHookBeforeRename = func(tmp string) error {
		if filepath.Base(tmp) != "" {
			return crash
		}
		return nil
	}
	_, err := s.CopyUp("a/b")
	testHookBeforeRename = nil
	if !errors.Is(err, crash) {
		t.Fatalf("CopyUp = %v, want the simulated crash", err)
	}
	if _, err := os.Lstat(filepath.Join(s.Upper(), "a")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("upper holds a after a failed copy-up: %v", err)
	}
	leftovers(t, s)
	// A temp left by a real crash is invisible to the union and cleaned.
	tmp, err := s.tmpPath()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(tmp, []byte("half"), 0o600); err != nil {
		t.Fatal(err)
	}
	if e, err := s.CopyUp("a/b"); err != nil || e.Layer != 0 {
		t.Fatalf("CopyUp after crash: %+v %v", e, err)
	}
	if d := readMeta(t, filepath.Join(s.Upper(), "a/b")).data; d != "data" {
		t.Errorf("data %q", d)
	}
	tree := unionTree(t, s)
	if len(tree) != 3 {
		t.Errorf("union after crash: %v", tree)
	}
	if err := s.CleanWork(); err != nil {
		t.Fatal(err)
	}
	leftovers(t, s)
}

func TestCopyUpConcurrent(t *testing.T) {
	testutil.RequireRoot(t)
	var ops []string
	var paths []string
	for i := range 8 {
		p := fmt.Sprintf("a/b/c/f%d", i)
		ops = append(ops, "f "+p+" "+p)
		paths = append(paths, p)
	}
	s := fixture{upper: []string{}, lowers: [][]string{ops}}.build(t)
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for g := range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range paths {
				p := paths[(i+g)%len(paths)]
				e, err := s.CopyUp(p)
				if err != nil {
					errs <- err
					return
				}
				if e.Layer != 0 {
					errs <- fmt.Errorf("%s served from layer %d", p, e.Layer)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	for _, p := range paths {
		if d := readMeta(t, filepath.Join(s.Upper(), p)).data; d != p {
			t.Errorf("%s: %q", p, d)
		}
	}
	leftovers(t, s)
}

func TestCopyUpReadOnly(t *testing.T) {
	s := fixture{lowers: [][]string{{"f a a"}}}.build(t)
	if _, err := s.CopyUp("a"); !errors.Is(err, unix.EROFS) {
		t.Errorf("CopyUp on read-only stack: %v", err)
	}
	if err := s.Remove("a"); !errors.Is(err, unix.EROFS) {
		t.Errorf("Remove on read-only stack: %v", err)
	}
}

var _ = bytes.Equal
var _ = sort.Strings

func TestCopyUpMeta(t *testing.T) {
	testutil.RequireOverlay(t)
	s := fixture{upper: []string{}, lowers: [][]string{{"f a/f payload", "s a/l f"}}}.build(t)
	setMeta(t, filepath.Join(s.Lowers()[0], "a/f"), 0o640, 5, 6, 1.7e9, "user.x", "1")
	want := readMeta(t, filepath.Join(s.Lowers()[0], "a/f"))
	e, err := s.CopyUpMeta("a/f")
	if err != nil {
		t.Fatal(err)
	}
	if !e.Metacopy || e.Layer != 0 || e.DataLayer != 1 {
		t.Fatalf("CopyUpMeta: %+v", e)
	}
	var st unix.Stat_t
	if err := unix.Lstat(e.RealPath, &st); err != nil || st.Size != 7 || st.Blocks != 0 {
		t.Errorf("metacopy file: size %d blocks %d %v", st.Size, st.Blocks, err)
	}
	got := readMeta(t, e.RealPath)
	got.data = want.data // the upper holds no data by design
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("metadata:\n got  %+v\n want %+v", got, want)
	}
	// The kernel serves the same union from this metacopy.
	compareWithKernel(t, s)
	// Non-regular files get a plain copy-up.
	if e, err := s.CopyUpMeta("a/l"); err != nil || e.Layer != 0 || e.Metacopy {
		t.Errorf("CopyUpMeta(symlink): %+v %v", e, err)
	}
	// A data copy-up completes the metacopy.
	if e, err = s.CopyUp("a/f"); err != nil || e.Metacopy || readMeta(t, e.RealPath).data != "payload" {
		t.Fatalf("CopyUp after CopyUpMeta: %+v %v", e, err)
	}
	leftovers(t, s)
	u := fixture{user: true, upper: []string{}, lowers: [][]string{{"f a a"}}}.build(t)
	if _, err := u.CopyUpMeta("a"); !errors.Is(err, ErrNotSupported) {
		t.Errorf("CopyUpMeta with userxattr: %v", err)
	}
}
