//go:build linux

package fuse

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/stratafs/strata/internal/testutil"
	"github.com/stratafs/strata/overlay"
	"github.com/stratafs/strata/overlay/overlaytest"
)

// Cross-backend format tests: one backend writes, the other mounts the
// same layer dirs and must see the same tree.

type crossLayers struct{ lower, upper, work string }

func newCrossLayers(t *testing.T) crossLayers {
	t.Helper()
	l := crossLayers{lower: t.TempDir(), upper: t.TempDir(), work: t.TempDir()}
	files := map[string]string{
		"a": "A", "b": "B", "m": "M", "keep/k": "K",
		"d/x": "X", "d/y": "Y", "d/sub/z": "Z",
		"r/q": "Q", "r/sub/s": "S",
	}
	for name, data := range files {
		p := filepath.Join(l.lower, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink("a", filepath.Join(l.lower, "sl")); err != nil {
		t.Fatal(err)
	}
	return l
}

func (l crossLayers) stack(t *testing.T) *overlay.Stack {
	t.Helper()
	s, err := overlay.NewStack([]string{l.lower}, overlay.WithUpper(l.upper, l.work))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func (l crossLayers) layers() overlaytest.Layers {
	return overlaytest.Layers{Lowers: []string{l.lower}, Upper: l.upper, Work: l.work}
}

// mountKernel mounts l with kernel overlayfs; the returned func unmounts.
func mountKernel(t *testing.T, l crossLayers) (string, func()) {
	t.Helper()
	target := t.TempDir()
	if err := overlay.Mount(l.stack(t), target, overlay.MountOptions{}); err != nil {
		t.Fatal(err)
	}
	done := false
	unmount := func() {
		if !done {
			done = true
			if err := overlay.Unmount(target); err != nil {
				t.Error(err)
				unix.Unmount(target, unix.MNT_DETACH)
			}
		}
	}
	t.Cleanup(unmount)
	return target, unmount
}

// mountFUSE mounts l with strata FUSE; the returned func unmounts.
func mountFUSE(t *testing.T, l crossLayers) (string, func()) {
	t.Helper()
	m := backend{}.Mount(t, l.layers())
	return m.Root(), func() { m.Unmount(t) }
}

// mountOn mounts l on backend be ("fuse" or "kernel") and returns the
// root; the mount goes away with the test.
func mountOn(t *testing.T, be string, l crossLayers) string {
	t.Helper()
	if be == "fuse" {
		root, _ := mountFUSE(t, l)
		return root
	}
	root, _ := mountKernel(t, l)
	return root
}

// writeOps changes the union at root: the operations whose on-disk form
// the two backends must agree on.
func writeOps(t *testing.T, root string) {
	t.Helper()
	p := func(n string) string { return filepath.Join(root, n) }
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.WriteFile(p("n"), []byte("N"), 0o640)) // create
	must(os.Remove(p("b")))                        // delete a lower file
	must(os.RemoveAll(p("d")))                     // rm -rf a lower dir
	must(os.Rename(p("r"), p("r2")))               // rename a lower dir
	must(os.Chmod(p("m"), 0o600))                  // chmod a lower file
	must(os.Mkdir(p("keep/nd"), 0o750))            // mkdir in a lower dir
	f, err := os.OpenFile(p("keep/k"), os.O_APPEND|os.O_WRONLY, 0)
	must(err)
	_, err = f.WriteString("+more")
	must(err)
	must(f.Close())
	must(os.Mkdir(p("d"), 0o700)) // a new dir where a lower dir was removed
	must(os.WriteFile(p("d/fresh"), []byte("F"), 0o644))
}

// tree describes every object under root: type, mode, size, content or
// link target, owner.
func tree(t *testing.T, root string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			return err
		}
		desc := fmt.Sprintf("mode=%o uid=%d gid=%d", st.Mode, st.Uid, st.Gid)
		switch st.Mode & unix.S_IFMT {
		case unix.S_IFREG:
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			desc += fmt.Sprintf(" data=%q", b)
		case unix.S_IFLNK:
			target, err := os.Readlink(p)
			if err != nil {
				return err
			}
			desc += " -> " + target
		case unix.S_IFDIR:
			desc += fmt.Sprintf(" mtime=%d", st.Mtim.Nano())
			if rel != "." {
				desc = fmt.Sprintf("mode=%o uid=%d gid=%d", st.Mode, st.Uid, st.Gid)
			}
		}
		out[rel] = desc
		return nil
	})
	if err != nil {
		t.Fatalf("walk %s: %v", root, err)
	}
	return out
}

func diffTrees(t *testing.T, what string, got, want map[string]string) {
	t.Helper()
	var keys []string
	for k := range got {
		keys = append(keys, k)
	}
	for k := range want {
		if _, ok := got[k]; !ok {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	for _, k := range keys {
		if got[k] != want[k] {
			t.Errorf("%s: %s: got %q, want %q", what, k, got[k], want[k])
		}
	}
}

func wantTree(t *testing.T, root string) {
	t.Helper()
	got := tree(t, root)
	for _, gone := range []string{"b", "d/x", "d/sub", "r", "r/q"} {
		if _, ok := got[gone]; ok {
			t.Errorf("%s still visible", gone)
		}
	}
	for name, want := range map[string]string{
		"n": `data="N"`, "keep/k": `data="K+more"`, "r2/q": `data="Q"`, "r2/sub/s": `data="S"`,
		"m": `data="M"`, "d/fresh": `data="F"`, "a": `data="A"`,
	} {
		if !bytes.Contains([]byte(got[name]), []byte(want)) {
			t.Errorf("%s = %q, want %s", name, got[name], want)
		}
	}
	if got["m"] != "" && !bytes.HasPrefix([]byte(got["m"]), []byte("mode=100600")) {
		t.Errorf("m: %s, want mode 0600", got["m"])
	}
}

// TestFUSEWritesKernelReads: what the FUSE backend writes, kernel
// overlayfs mounts as the same tree.
func TestFUSEWritesKernelReads(t *testing.T) {
	testutil.RequireFUSE(t)
	testutil.RequireOverlay(t)
	l := newCrossLayers(t)
	root, unmount := mountFUSE(t, l)
	writeOps(t, root)
	before := tree(t, root)
	wantTree(t, root)
	unmount()

	// the format on disk is the kernel's
	var st unix.Stat_t
	for _, wo := range []string{"b", "r"} {
		if err := unix.Lstat(filepath.Join(l.upper, wo), &st); err != nil || !overlay.IsWhiteoutStat(&st) {
			t.Errorf("upper/%s: want a char 0/0 whiteout (err %v, mode %o)", wo, err, st.Mode)
		}
	}
	if v, _, _ := getxattr(filepath.Join(l.upper, "r2"), "trusted.overlay.redirect"); v != "/r" {
		t.Errorf("upper/r2 redirect = %q, want /r", v)
	}
	if v, _, _ := getxattr(filepath.Join(l.upper, "d"), "trusted.overlay.opaque"); v != "y" {
		t.Errorf("upper/d opaque = %q, want y", v)
	}

	kroot, kunmount := mountKernel(t, l)
	diffTrees(t, "kernel view of FUSE writes", tree(t, kroot), before)
	wantDinoMatches(t, "kernel", kroot, ".", "keep", "r2")
	kunmount()

	// and back: FUSE still sees the same after the kernel mounted the dirs
	root2, unmount2 := mountFUSE(t, l)
	diffTrees(t, "FUSE remount", tree(t, root2), before)
	unmount2()
}

// TestKernelWritesFUSEReads: what kernel overlayfs writes (including
// metadata-only copies and redirects), the FUSE backend mounts as the
// same tree, and can keep changing.
func TestKernelWritesFUSEReads(t *testing.T) {
	testutil.RequireFUSE(t)
	testutil.RequireOverlay(t)
	l := newCrossLayers(t)
	kroot, kunmount := mountKernel(t, l)
	writeOps(t, kroot)
	before := tree(t, kroot)
	wantTree(t, kroot)
	kunmount()

	root, unmount := mountFUSE(t, l)
	diffTrees(t, "FUSE view of kernel writes", tree(t, root), before)
	wantDinoMatches(t, "FUSE", root, ".", "keep", "r2")
	// keep going on top of the kernel's metacopy and redirect
	if err := os.WriteFile(filepath.Join(root, "m"), []byte("M2"), 0); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "r2/sub/s2"), []byte("S2"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(filepath.Join(root, "r2"), filepath.Join(root, "r3")); err != nil {
		t.Fatal(err)
	}
	after := tree(t, root)
	unmount()

	kroot2, kunmount2 := mountKernel(t, l)
	diffTrees(t, "kernel view after FUSE writes on kernel format", tree(t, kroot2), after)
	kunmount2()
	if !bytes.Contains([]byte(after["m"]), []byte(`data="M2"`)) || after["r3/sub/s2"] == "" || after["r3/q"] == "" {
		t.Errorf("FUSE writes over kernel format: m=%q r3/sub/s2=%q r3/q=%q", after["m"], after["r3/sub/s2"], after["r3/q"])
	}
}

// TestPassthroughLowerFdNotWritten pins the passthrough trap: the kernel
// keeps one backing file per inode, so if a lower file opened read-only
// were a passthrough backing file, a later open for write (after
// copy-up) would write into the lower layer.
func TestPassthroughLowerFdNotWritten(t *testing.T) {
	testutil.RequireFUSE(t)
	l := newCrossLayers(t)
	root, unmount := mountFUSE(t, l)
	r, err := os.Open(filepath.Join(root, "a"))
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	for _, flags := range []int{os.O_WRONLY, os.O_RDWR} {
		w, err := os.OpenFile(filepath.Join(root, "a"), flags, 0)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := w.WriteAt([]byte("W"), 0); err != nil {
			t.Fatal(err)
		}
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
	}
	// a read-only open after the copy-up while the lower fd is still open
	r2, err := os.Open(filepath.Join(root, "a"))
	if err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 1)
	if _, err := r2.ReadAt(b, 0); err != nil || string(b) != "W" {
		t.Errorf("read after copy-up: %q, %v; want W", b, err)
	}
	r2.Close()
	r.Close()
	// with no lower fd open, write and read through passthrough
	if err := os.WriteFile(filepath.Join(root, "a"), []byte("P"), 0); err != nil {
		t.Fatal(err)
	}
	unmount()
	if got, _ := os.ReadFile(filepath.Join(l.lower, "a")); string(got) != "A" {
		t.Errorf("lower file changed to %q: a write went to the lower layer", got)
	}
	if got, _ := os.ReadFile(filepath.Join(l.upper, "a")); string(got) != "P" {
		t.Errorf("upper file = %q, want P", got)
	}
}

// TestReadOnlyStack: a stack without upper mounts read-only.
func TestReadOnlyStack(t *testing.T) {
	testutil.RequireFUSE(t)
	l := newCrossLayers(t)
	m := backend{}.Mount(t, overlaytest.Layers{Lowers: []string{l.lower}})
	err := os.WriteFile(filepath.Join(m.Root(), "x"), nil, 0o644)
	if !errors.Is(err, unix.EROFS) {
		t.Errorf("create on read-only stack: %v, want EROFS", err)
	}
	if b, err := os.ReadFile(filepath.Join(m.Root(), "r/sub/s")); err != nil || string(b) != "S" {
		t.Errorf("read: %q %v", b, err)
	}
}

// direntInos lists dir with getdents and returns each name's d_ino.
func direntInos(t *testing.T, dir string) map[string]uint64 {
	t.Helper()
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	out := map[string]uint64{}
	buf := make([]byte, 1<<16)
	for {
		n, err := unix.Getdents(fd, buf)
		if err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			return out
		}
		for b := buf[:n]; len(b) > 0; {
			// struct linux_dirent64: u64 ino, s64 off, u16 reclen, u8 type, name
			ino := binary.NativeEndian.Uint64(b[0:8])
			reclen := binary.NativeEndian.Uint16(b[16:18])
			name := b[19:reclen]
			if i := bytes.IndexByte(name, 0); i >= 0 {
				name = name[:i]
			}
			out[string(name)] = ino
			b = b[reclen:]
		}
	}
}

// wantDinoMatches checks that d_ino equals st_ino for every entry of
// the given dirs under root.
func wantDinoMatches(t *testing.T, what, root string, dirs ...string) {
	t.Helper()
	for _, d := range dirs {
		for name, ino := range direntInos(t, filepath.Join(root, d)) {
			if name == "." || name == ".." {
				continue
			}
			var st unix.Stat_t
			if err := unix.Lstat(filepath.Join(root, d, name), &st); err != nil {
				t.Fatal(err)
			}
			if st.Ino != ino {
				t.Errorf("%s: %s/%s: d_ino %d, st_ino %d", what, d, name, ino, st.Ino)
			}
		}
	}
}
