//go:build linux

package overlaytest

import (
	"bytes"
	"fmt"
	"maps"
	"os"
	"slices"
	"strconv"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/stratafs/strata/overlay"
)

// The lower file every copy-up check starts from: three 4 KiB data
// blocks at 0, 64 KiB and 8 MiB, holes between, a trailing hole to
// 16 MiB; mode, owner, times and a user xattr set.
const (
	cuName  = "dir/sub/f"
	cuBlock = 4096
	cuSize  = 16 << 20
	cuMode  = 0o640
	cuUID   = 1000
	cuGID   = 1001
)

// cuOffsets are the offsets of the data blocks; cuHoles are offsets of
// 4 KiB samples inside holes.
var (
	cuOffsets = []int64{0, 64 << 10, 8 << 20}
	cuHoles   = []int64{cuBlock, 32 << 10, 4 << 20, 12 << 20, cuSize - cuBlock}
	// cuBigHoles are ranges that no copy may fill: holes of whole MiBs,
	// away from any data block.
	cuBigHoles = [][2]int64{{2 << 20, 7 << 20}, {10 << 20, cuSize}}
	// cuWriteOff is where the "Write" op writes "XY".
	cuWriteOff int64 = 8<<20 + 10
)

func cuData(off int64) []byte {
	return bytes.Repeat([]byte{byte('a' + off%251)}, cuBlock) //nolint:gosec // off >= 0, so 'a'+off%251 < 256
}

// cuLower writes the copy-up source into l.
func cuLower(t *testing.T, l layer) {
	t.Helper()
	l.dir("dir/sub")
	f, err := os.OpenFile(l.p(cuName), os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	for _, off := range cuOffsets {
		if _, err := f.WriteAt(cuData(off), off); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.Truncate(cuSize); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	l.chmod(cuName, cuMode).chown(cuName, cuUID, cuGID).setxattr(cuName, "user.a", "alpha").mtime(cuName, fixedTime)
	l.chmod("dir/sub", 0o750).chown("dir/sub", cuUID, cuGID).setxattr("dir/sub", "user.d", "dee").mtime("dir/sub", fixedTime)
	l.chmod("dir", 0o711).mtime("dir", fixedTime)
}

// copyUpOp is one operation that must copy the lower file up.
type copyUpOp struct {
	do func(t *testing.T, p string)
	// metaOK: the op changes metadata only, so the backend may copy up
	// metadata only (quirk MetadataOnlyCopyUp).
	metaOK bool
	// what the op changes, so the preserved-attribute checks skip it
	size  int64
	mode  uint32
	uid   int
	mtime time.Time
	// newMtime: the op sets mtime to now (a data change)
	newMtime bool
	xattr    [2]string // an extra xattr set, if any
	links    uint64
	data     func(t *testing.T, p string) // extra data check, on the union or upper
}

var copyUpOps = map[string]copyUpOp{
	"OpenWrite": {do: func(t *testing.T, p string) {
		f, err := os.OpenFile(p, os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		if err := f.Close(); err != nil {
			t.Fatal(err)
		}
	}},
	"Write": {newMtime: true, do: func(t *testing.T, p string) {
		f, err := os.OpenFile(p, os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer closeFile(t, f)
		if _, err := f.WriteAt([]byte("XY"), cuWriteOff); err != nil {
			t.Fatal(err)
		}
	}, data: func(t *testing.T, p string) {
		t.Helper()
		b := make([]byte, 2)
		f, err := os.Open(p)
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = f.Close() }() // read-only
		if _, err := f.ReadAt(b, cuWriteOff); err != nil || string(b) != "XY" {
			t.Errorf("%s: written bytes read back as %q, %v", p, b, err)
		}
	}},
	"Truncate": {size: cuSize + 1<<20, newMtime: true, do: func(t *testing.T, p string) {
		if err := os.Truncate(p, cuSize+1<<20); err != nil {
			t.Fatal(err)
		}
	}},
	"Chmod": {metaOK: true, mode: 0o604, do: func(t *testing.T, p string) {
		if err := os.Chmod(p, 0o604); err != nil {
			t.Fatal(err)
		}
	}},
	"Chown": {metaOK: true, uid: 2000, do: func(t *testing.T, p string) {
		if err := os.Chown(p, 2000, -1); err != nil {
			t.Fatal(err)
		}
	}},
	"Utimes": {metaOK: true, mtime: otherTime, do: func(t *testing.T, p string) {
		if err := os.Chtimes(p, otherTime, otherTime); err != nil {
			t.Fatal(err)
		}
	}},
	"Setxattr": {metaOK: true, xattr: [2]string{"user.new", "value"}, do: func(t *testing.T, p string) {
		if err := unix.Setxattr(p, "user.new", []byte("value"), 0); err != nil {
			t.Fatal(err)
		}
	}},
	"Link": {metaOK: true, links: 2, do: func(t *testing.T, p string) {
		if err := os.Link(p, p+".link"); err != nil {
			t.Fatal(err)
		}
	}},
}

func init() {
	checks := map[string]func(*testing.T, Backend){
		"CopyUpParents": CopyUpParents,
		"AppendWrite":   AppendWrite,
		"OpenTrunc":     OpenTrunc,
		"MmapWrite":     MmapWrite,
		"LargeSparse":   LargeSparse,
	}
	for name, op := range copyUpOps {
		checks["CopyUpOn"+name] = func(t *testing.T, b Backend) { copyUp(t, b, op) }
	}
	register(checks)
}

// copyUp: op on a lower file copies it up, keeping data, holes, mode,
// owner, mtime and xattrs except what op itself changes; the result is
// the same through the union, in upper on disk, and after remount.
func copyUp(t *testing.T, b Backend, op copyUpOp) {
	e := newEnv(t, b, 1, false)
	cuLower(t, e.L(0))
	e.mount()

	before := lstat(t, e.p(cuName))
	op.do(t, e.p(cuName))
	want := cuAttrs{size: cuSize, mode: cuMode, uid: cuUID, gid: cuGID, mtime: fixedTime, links: 1,
		xattrs: map[string]string{"user.a": "alpha"}}
	if op.size != 0 {
		want.size = op.size
	}
	if op.mode != 0 {
		want.mode = op.mode
	}
	if op.uid != 0 {
		want.uid = op.uid
	}
	if !op.mtime.IsZero() {
		want.mtime = op.mtime
	}
	want.anyMtime = op.newMtime
	if op.xattr[0] != "" {
		want.xattrs[op.xattr[0]] = op.xattr[1]
	}
	if op.links != 0 {
		want.links = op.links
	}
	checkUnion := func(when string) {
		t.Helper()
		p := e.p(cuName)
		want.check(t, when+": union", p)
		cuCheckData(t, p)
		if op.data != nil {
			op.data(t, p)
		}
		if st := lstat(t, p); st.Ino != before.Ino {
			t.Logf("%s: st_ino %d -> %d across copy-up (see check InoStable)", when, before.Ino, st.Ino)
		}
	}
	checkUnion("after op")

	e.unmount()
	up := e.U().p(cuName)
	if !exists(t, up) {
		t.Fatalf("upper %s: missing after the op; no copy-up happened", cuName)
	}
	meta := hasXattr(up, format.Xattr(overlay.XattrMetacopy))
	if meta || op.metaOK {
		observe(t, b, MetadataOnlyCopyUp, meta, "upper file after the op has metacopy xattr: "+strconv.FormatBool(meta))
	}
	if meta && !op.metaOK {
		t.Errorf("upper %s: a metadata-only copy after an op that changes data", cuName)
	}
	want.check(t, "upper on disk", up)
	if !meta {
		cuCheckData(t, up)
		if op.data != nil {
			op.data(t, up)
		}
		got, lower := extents(t, up), extents(t, e.L(0).p(cuName))
		for _, x := range got {
			for _, h := range cuBigHoles {
				if x[0] < h[1] && h[0] < x[1] {
					t.Errorf("upper %s: data extent %v fills the lower file's hole %v (extents %v, lower %v)", cuName, x, h, got, lower)
				}
			}
		}
		// "Write" lands inside a data block and "Truncate" adds a hole,
		// so the extents of an exact copy equal the lower file's.
		observe(t, b, CopyUpFillsSmallHoles, !slices.Equal(got, lower),
			fmt.Sprintf("upper extents %v, lower %v", got, lower))
	}
	// The lower layer is untouched.
	cuAttrs{size: cuSize, mode: cuMode, uid: cuUID, gid: cuGID, mtime: fixedTime, links: 1,
		xattrs: map[string]string{"user.a": "alpha"}}.check(t, "lower", e.L(0).p(cuName))

	e.remount()
	checkUnion("after remount")
}

type cuAttrs struct {
	size     int64
	mode     uint32
	uid, gid int
	mtime    time.Time
	anyMtime bool // mtime was set to now; only check that it moved
	links    uint64
	xattrs   map[string]string
}

// check compares the file at p with a. A metacopy stub in upper keeps
// the lower size too (its data comes from below), so it is checked alike.
func (a cuAttrs) check(t *testing.T, where, p string) {
	t.Helper()
	st := lstat(t, p)
	if st.Size != a.size {
		t.Errorf("%s: size %d, want %d", where, st.Size, a.size)
	}
	if st.Mode&0o7777 != a.mode || st.Mode&unix.S_IFMT != unix.S_IFREG {
		t.Errorf("%s: mode %o, want regular %o", where, st.Mode, a.mode)
	}
	if int(st.Uid) != a.uid || int(st.Gid) != a.gid {
		t.Errorf("%s: owner %d:%d, want %d:%d", where, st.Uid, st.Gid, a.uid, a.gid)
	}
	if a.anyMtime {
		if mtimeOf(st).Equal(a.mtime) {
			t.Errorf("%s: mtime still %v after a data change", where, a.mtime)
		}
	} else if !mtimeOf(st).Equal(a.mtime) {
		t.Errorf("%s: mtime %v, want %v", where, mtimeOf(st).UTC(), a.mtime)
	}
	if st.Nlink != a.links {
		t.Errorf("%s: nlink %d, want %d", where, st.Nlink, a.links)
	}
	for k, v := range a.xattrs {
		wantXattr(t, p, k, v)
	}
}

// cuCheckData reads the data blocks and samples of the holes.
func cuCheckData(t *testing.T, p string) {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = f.Close() }() // read-only
	buf := make([]byte, cuBlock)
	for _, off := range cuOffsets {
		if _, err := f.ReadAt(buf, off); err != nil {
			t.Fatalf("%s: read @%d: %v", p, off, err)
		}
		want := cuData(off)
		if w := cuWriteOff - off; w >= 0 && w < cuBlock {
			copy(buf[w:w+2], want[w:w+2]) // "Write" overwrites these
		}
		if !bytes.Equal(buf, want) {
			t.Errorf("%s: data @%d differs", p, off)
		}
	}
	for _, off := range cuHoles {
		if _, err := f.ReadAt(buf, off); err != nil {
			t.Fatalf("%s: read @%d: %v", p, off, err)
		}
		if !bytes.Equal(buf, make([]byte, cuBlock)) {
			t.Errorf("%s: hole @%d reads non-zero", p, off)
		}
	}
}

// CopyUpParents: copying up a deep file creates its parent dirs in upper
// with their mode, owner, xattrs and mtime.
func CopyUpParents(t *testing.T, b Backend) {
	e := newEnv(t, b, 1, false)
	cuLower(t, e.L(0))
	e.mount()

	writeFile(t, e.p("dir/sub/new"), "new") // copies up dir and dir/sub
	check := func(where, root string) {
		t.Helper()
		for _, d := range []struct {
			name string
			mode uint32
			uid  uint32
		}{{"dir", 0o711, 0}, {"dir/sub", 0o750, cuUID}} {
			st := lstat(t, root+"/"+d.name)
			if st.Mode&0o7777 != d.mode || st.Uid != d.uid {
				t.Errorf("%s %s: mode %o owner %d, want %o %d", where, d.name, st.Mode&0o7777, st.Uid, d.mode, d.uid)
			}
			if d.name == "dir" && !mtimeOf(st).Equal(fixedTime) {
				// dir/sub got a new entry, so its mtime moves; dir's must not.
				t.Errorf("%s %s: mtime %v, want %v", where, d.name, mtimeOf(st).UTC(), fixedTime)
			}
		}
		wantXattr(t, root+"/dir/sub", "user.d", "dee")
	}
	check("union", e.m.Root())
	wantNames(t, e.p("dir/sub"), "f", "new")
	e.unmount()
	check("upper", e.U().root)
	e.remount()
	check("union after remount", e.m.Root())
}

// AppendWrite: O_APPEND on a lower file appends after the lower data.
func AppendWrite(t *testing.T, b Backend) {
	e := newEnv(t, b, 1, false)
	e.L(0).file("f", "lower")
	e.mount()

	for _, s := range []string{"+one", "+two"} {
		f, err := os.OpenFile(e.p("f"), os.O_WRONLY|os.O_APPEND, 0)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.Write([]byte(s)); err != nil {
			t.Fatal(err)
		}
		// The offset is ignored for O_APPEND writes.
		if _, err := f.Seek(0, 0); err != nil {
			t.Fatal(err)
		}
		if _, err := f.Write([]byte("!")); err != nil {
			t.Fatal(err)
		}
		if err := f.Close(); err != nil {
			t.Fatal(err)
		}
	}
	const want = "lower+one!+two!"
	wantContent(t, e.p("f"), want)
	e.unmount()
	wantContent(t, e.U().p("f"), want)
	wantContent(t, e.L(0).p("f"), "lower")
	e.remount()
	wantContent(t, e.p("f"), want)
}

// OpenTrunc: O_TRUNC on a lower file leaves only what is written after.
func OpenTrunc(t *testing.T, b Backend) {
	e := newEnv(t, b, 1, false)
	e.L(0).file("f", "lower data that is longer").file("g", "lower")
	e.mount()

	writeFile(t, e.p("f"), "new") // O_WRONLY|O_CREATE|O_TRUNC
	f, err := os.OpenFile(e.p("g"), os.O_RDWR|os.O_TRUNC, 0)
	if err != nil {
		t.Fatal(err)
	}
	if st, _ := f.Stat(); st.Size() != 0 {
		t.Errorf("fstat after O_TRUNC open: size %d", st.Size())
	}
	closeFile(t, f)
	wantContent(t, e.p("f"), "new")
	wantContent(t, e.p("g"), "")
	e.unmount()
	wantContent(t, e.U().p("f"), "new")
	wantContent(t, e.U().p("g"), "")
	e.remount()
	wantContent(t, e.p("f"), "new")
	wantContent(t, e.p("g"), "")
}

// MmapWrite: a shared writable mapping of a lower file writes through to
// the copy; the data is there after munmap, close and remount.
func MmapWrite(t *testing.T, b Backend) {
	e := newEnv(t, b, 1, false)
	const size = 3 * 4096
	e.L(0).file("f", string(bytes.Repeat([]byte("l"), size)))
	e.mount()

	fd, err := unix.Open(e.p("f"), unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	mem, err := unix.Mmap(fd, 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		_ = unix.Close(fd) // failing anyway
		t.Fatalf("mmap MAP_SHARED of a lower file: %v", err)
	}
	if mem[0] != 'l' || mem[size-1] != 'l' {
		t.Errorf("mapping reads %q...%q, want lower data", mem[0], mem[size-1])
	}
	copy(mem[4096:], "mapped")
	if err := unix.Msync(mem, unix.MS_SYNC); err != nil {
		t.Errorf("msync: %v", err)
	}
	if err := unix.Munmap(mem); err != nil {
		t.Error(err)
	}
	if err := unix.Close(fd); err != nil {
		t.Error(err)
	}

	want := bytes.Repeat([]byte("l"), size)
	copy(want[4096:], "mapped")
	wantContent(t, e.p("f"), string(want))
	e.unmount()
	wantContent(t, e.U().p("f"), string(want))
	e.remount()
	wantContent(t, e.p("f"), string(want))
}

// LargeSparse: a 1 GiB sparse lower file reads through the union; an
// O_APPEND write copies it up, and it stays sparse in upper.
func LargeSparse(t *testing.T, b Backend) {
	e := newEnv(t, b, 1, false)
	const size = 1<<30 + 12345
	blocks := map[int64]string{0: "first", 512 << 20: "middle", size - 5: "last!"}
	f, err := os.Create(e.L(0).p("big"))
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	for off, s := range blocks {
		if _, err := f.WriteAt([]byte(s), off); err != nil {
			t.Fatal(err)
		}
	}
	closeFile(t, f)
	e.mount()

	check := func(where, p string, size int64, blocks map[int64]string) {
		t.Helper()
		f, err := os.Open(p)
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = f.Close() }() // read-only
		if st, _ := f.Stat(); st.Size() != size {
			t.Errorf("%s: size %d, want %d", where, st.Size(), size)
		}
		for off, s := range blocks {
			buf := make([]byte, len(s))
			if _, err := f.ReadAt(buf, off); err != nil || string(buf) != s {
				t.Errorf("%s: @%d read %q, %v; want %q", where, off, buf, err, s)
			}
		}
		hole := make([]byte, 64<<10)
		if _, err := f.ReadAt(hole, 700<<20); err != nil || !bytes.Equal(hole, make([]byte, len(hole))) {
			t.Errorf("%s: hole @700MiB: %v or non-zero", where, err)
		}
	}
	check("union", e.p("big"), size, blocks)

	a, err := os.OpenFile(e.p("big"), os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.Write([]byte("tail")); err != nil {
		t.Fatal(err)
	}
	closeFile(t, a)
	appended := maps.Clone(blocks)
	appended[size] = "tail"
	check("union after append", e.p("big"), size+4, appended)

	e.unmount()
	up := e.U().p("big")
	check("upper", up, size+4, appended)
	if n := allocated(t, up); n > 16<<20 {
		t.Errorf("upper big: %d bytes allocated for a file with 4 small data blocks; holes were filled", n)
	}
	check("lower", e.L(0).p("big"), size, blocks)
	e.remount()
	check("union after remount", e.p("big"), size+4, appended)
}
