//go:build linux

package overlaytest

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"slices"
	"testing"

	"golang.org/x/sys/unix"
)

func init() {
	register(map[string]func(*testing.T, Backend){
		"ReaddirIno":          ReaddirIno,
		"ManyLayers":          ManyLayers,
		"RenameLowerDirTwice": RenameLowerDirTwice,
		"UnlinkOpenFile":      UnlinkOpenFile,
		"Fsync":               Fsync,
	})
}

// dirent is one entry of getdents64.
type dirent struct {
	ino  uint64
	typ  uint8
	name string
}

// getdents reads dir with getdents64, . and .. included.
func getdents(t *testing.T, dir string) []dirent {
	t.Helper()
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatalf("open %s: %v", dir, err)
	}
	defer func() { _ = unix.Close(fd) }() // read-only
	var out []dirent
	buf := make([]byte, 4096)
	for {
		n, err := unix.Getdents(fd, buf)
		if err != nil {
			t.Fatalf("getdents %s: %v", dir, err)
		}
		if n == 0 {
			return out
		}
		for b := buf[:n]; len(b) > 0; {
			// struct linux_dirent64: ino u64, off s64, reclen u16, type u8, name
			reclen := binary.NativeEndian.Uint16(b[16:18])
			name := b[19:reclen]
			if i := bytes.IndexByte(name, 0); i >= 0 {
				name = name[:i]
			}
			out = append(out, dirent{ino: binary.NativeEndian.Uint64(b[0:8]), typ: b[18], name: string(name)})
			b = b[reclen:]
		}
	}
}

// ReaddirIno: getdents lists . and .. once each, and d_ino and d_type of
// every other entry agree with lstat, for lower, upper, merged and
// copied-up entries.
func ReaddirIno(t *testing.T, b Backend) {
	e := newEnv(t, b, 2, false)
	e.L(0).file("d/l0", "").dir("d/sub").symlink("l0", "d/ln")
	e.L(1).file("d/l1", "").file("d/sub/x", "").file("d/cu", "")
	e.mount()
	writeFile(t, e.p("d/u"), "")
	writeFile(t, e.p("d/cu"), "copied up")
	if err := unix.Mkfifo(e.p("d/p"), 0o644); err != nil {
		t.Fatal(err)
	}

	types := map[uint32]uint8{unix.S_IFREG: unix.DT_REG, unix.S_IFDIR: unix.DT_DIR, unix.S_IFLNK: unix.DT_LNK, unix.S_IFIFO: unix.DT_FIFO}
	var got []string
	dots := 0
	for _, de := range getdents(t, e.p("d")) {
		if de.name == "." || de.name == ".." {
			dots++
			continue
		}
		got = append(got, de.name)
		st := lstat(t, e.p("d/"+de.name))
		if de.ino != st.Ino {
			t.Errorf("d/%s: d_ino %d, st_ino %d", de.name, de.ino, st.Ino)
		}
		if de.typ != unix.DT_UNKNOWN && de.typ != types[st.Mode&unix.S_IFMT] {
			t.Errorf("d/%s: d_type %d, lstat mode %o", de.name, de.typ, st.Mode)
		}
	}
	if dots != 2 {
		t.Errorf("getdents: %d dot entries, want . and .. once each", dots)
	}
	slices.Sort(got)
	if want := []string{"cu", "l0", "l1", "ln", "p", "sub", "u"}; !slices.Equal(got, want) {
		t.Errorf("getdents: %q, want %q", got, want)
	}
}

// ManyLayers: a chain of 40 lowers, each adding a file, shadowing the
// one below it and whiting out another: lookup and readdir see exactly
// the topmost state.
func ManyLayers(t *testing.T, b Backend) {
	const n = 40
	e := newEnv(t, b, n, false)
	for i := range n {
		l := e.L(i)
		l.file(fmt.Sprintf("d/own%02d", i), "")
		l.file("d/shadow", fmt.Sprintf("layer %d", i))
		if i%2 == 0 {
			l.whiteout(fmt.Sprintf("d/own%02d", i+1)) // hides the next layer's own file
		}
	}
	e.mount()
	// Files of even layers show; those of odd layers are whited out by
	// the layer above.
	var want []string
	for i := 0; i < n; i += 2 {
		want = append(want, fmt.Sprintf("own%02d", i))
	}
	want = append(want, "shadow")
	wantNames(t, e.p("d"), want...)
	wantContent(t, e.p("d/shadow"), "layer 0")
	wantAbsent(t, e.p("d/own39"))
	// A write near the bottom copies up through the whole chain.
	writeFile(t, e.p("d/own38"), "up")
	e.remount()
	wantContent(t, e.p("d/own38"), "up")
	wantNames(t, e.p("d"), want...)
}

// RenameLowerDirTwice: a lower dir renamed twice keeps its content; a new
// dir under its old name is empty; rm -rf of the renamed dir leaves it
// gone; all of it across remounts.
func RenameLowerDirTwice(t *testing.T, b Backend) {
	e := newEnv(t, b, 1, false)
	e.L(0).file("a/x", "x").file("a/s/y", "y")
	e.mount()
	if err := os.Rename(e.p("a"), e.p("b")); err != nil {
		if errors.Is(err, unix.EXDEV) {
			observe(t, b, RenameDirEXDEV, true, "rename(2) of a lower dir")
			return
		}
		t.Fatal(err)
	}
	if err := os.Rename(e.p("b"), e.p("c")); err != nil {
		t.Fatalf("second rename of a lower dir: %v", err)
	}
	if err := os.Mkdir(e.p("a"), 0o755); err != nil {
		t.Fatal(err)
	}
	check := func() {
		t.Helper()
		wantNames(t, e.m.Root(), "a", "c")
		wantNames(t, e.p("a"))
		wantNames(t, e.p("c"), "s", "x")
		wantContent(t, e.p("c/s/y"), "y")
	}
	check()
	e.remount()
	check()
	if err := os.RemoveAll(e.p("c")); err != nil {
		t.Fatal(err)
	}
	e.remount()
	wantNames(t, e.m.Root(), "a")
	wantNames(t, e.p("a"))
}

// UnlinkOpenFile: a lower file unlinked while open stays readable through
// the fd; a copied-up file unlinked while open stays writable.
func UnlinkOpenFile(t *testing.T, b Backend) {
	e := newEnv(t, b, 1, false)
	e.L(0).file("r", "read me").file("w", "write me")
	e.mount()
	r, err := os.Open(e.p("r"))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = r.Close() }() // read-only
	w, err := os.OpenFile(e.p("w"), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer closeFile(t, w)
	for _, n := range []string{"r", "w"} {
		if err := os.Remove(e.p(n)); err != nil {
			t.Fatal(err)
		}
		wantAbsent(t, e.p(n))
	}
	buf := make([]byte, 7)
	if _, err := r.ReadAt(buf, 0); err != nil || string(buf) != "read me" {
		t.Errorf("read of an unlinked lower file: %q, %v", buf, err)
	}
	if _, err := w.WriteAt([]byte("WRITE"), 0); err != nil {
		t.Errorf("write to an unlinked copied-up file: %v", err)
	}
	got := make([]byte, 8)
	if _, err := w.ReadAt(got, 0); err != nil || string(got) != "WRITE me" {
		t.Errorf("read back of an unlinked copied-up file: %q, %v", got, err)
	}
	if st, err := w.Stat(); err != nil || st.Size() != 8 {
		t.Errorf("fstat of an unlinked copied-up file: %v, %v", st, err)
	}
	wantNames(t, e.m.Root())
}

// Fsync: fsync, fdatasync and syncfs succeed on lower, copied-up, new
// files and dirs.
func Fsync(t *testing.T, b Backend) {
	e := newEnv(t, b, 1, false)
	e.L(0).file("f", "x").dir("d")
	e.mount()
	writeFile(t, e.p("n"), "new")
	for _, c := range []struct {
		name string
		flag int
	}{{"f", os.O_RDONLY}, {"f", os.O_WRONLY}, {"n", os.O_RDWR}, {"d", os.O_RDONLY}, {".", os.O_RDONLY}} {
		f, err := os.OpenFile(e.p(c.name), c.flag, 0)
		if err != nil {
			t.Fatal(err)
		}
		if err := f.Sync(); err != nil {
			t.Errorf("fsync %s (flags %#x): %v", c.name, c.flag, err)
		}
		if err := unix.Fdatasync(int(f.Fd())); err != nil {
			t.Errorf("fdatasync %s: %v", c.name, err)
		}
		if err := unix.Syncfs(int(f.Fd())); err != nil {
			t.Errorf("syncfs via %s: %v", c.name, err)
		}
		closeFile(t, f)
	}
}
