//go:build linux

package fuse

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/stratafs/strata/internal/testutil"
	"github.com/stratafs/strata/overlay"
	"github.com/stratafs/strata/overlay/overlaytest"
)

// TestDeepStackMatchesKernel: on a stack of 24 lowers, where lookups go
// through the lower name index, the FUSE tree (lookups of present and
// absent names, whiteouts at many depths, opaque dirs, a dir replaced by
// a file, an xattr whiteout, a redirect) equals the kernel's, before and
// after changes through FUSE; with the index built by listing the
// layers, and read from on-disk index files (which know which entries
// carry no overlay xattrs, so lookups skip their xattr reads).
func TestDeepStackMatchesKernel(t *testing.T) {
	testutil.RequireFUSE(t)
	testutil.RequireOverlay(t)
	for _, onDisk := range []bool{false, true} {
		t.Run(fmt.Sprintf("indexfiles=%v", onDisk), func(t *testing.T) { testDeepStackMatchesKernel(t, onDisk) })
	}
}

func testDeepStackMatchesKernel(t *testing.T, onDisk bool) {
	const depth = 24
	var f overlay.Format
	root := t.TempDir()
	var lowers []string
	for i := 0; i < depth; i++ {
		l := filepath.Join(root, fmt.Sprintf("l%02d", i))
		lowers = append(lowers, l)
		mk := func(p, data string) {
			t.Helper()
			p = filepath.Join(l, p)
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		mk(fmt.Sprintf("d/f%02d", i), fmt.Sprint("layer ", i))
		mk("d/shared", fmt.Sprint("top is ", i))
		mk(fmt.Sprintf("d/sub/s%02d", i), "s")
		if i%3 == 0 && i+2 < depth {
			// hide a name of a deeper layer
			if err := overlay.MakeWhiteout(filepath.Join(l, "d"), fmt.Sprintf("f%02d", i+2)); err != nil {
				t.Fatal(err)
			}
		}
		switch i {
		case 10: // opaque: hides d/sub of layers 11..
			if err := f.SetOpaque(filepath.Join(l, "d/sub")); err != nil {
				t.Fatal(err)
			}
		case 5: // a file hides the dir d/x of deeper layers
			mk("d/x", "file")
		case 7:
			mk("d/x/deep", "hidden")
		case 12: // a dir with xattr whiteouts hides d/f13
			if err := unix.Lsetxattr(filepath.Join(l, "d"), f.Xattr(overlay.XattrOpaque), []byte("x"), 0); err != nil {
				t.Fatal(err)
			}
			mk("d/f13", "")
			if err := unix.Lsetxattr(filepath.Join(l, "d/f13"), f.Xattr(overlay.XattrWhiteout), nil, 0); err != nil {
				t.Fatal(err)
			}
		}
	}
	// a dir with a redirect in a lower layer, as the kernel leaves it
	// after renaming a merged dir: d/moved shows d/sub of the layers
	// below
	mv := filepath.Join(lowers[2], "d/moved")
	if err := os.MkdirAll(mv, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := unix.Lsetxattr(mv, f.Xattr(overlay.XattrRedirect), []byte("/d/sub"), 0); err != nil {
		t.Fatal(err)
	}
	var sopts []overlay.StackOption
	if onDisk {
		for _, l := range lowers {
			if err := overlay.WriteIndexFile(l, overlay.IndexPath(l)); err != nil {
				t.Fatal(err)
			}
		}
		sopts = append(sopts, overlay.WithSiblingIndexFiles())
	}
	l := crossLayers{lower: lowers[0], upper: t.TempDir(), work: t.TempDir()}
	layers := overlaytest.Layers{Lowers: lowers, Upper: l.upper, Work: l.work}
	kernelTree := func() map[string]string {
		s, err := overlay.NewStack(lowers, overlay.WithUpper(l.upper, l.work))
		if err != nil {
			t.Fatal(err)
		}
		target := t.TempDir()
		if err := overlay.Mount(s, target, overlay.MountOptions{}); err != nil {
			t.Fatal(err)
		}
		defer overlay.Unmount(target)
		return tree(t, target)
	}
	want := kernelTree()
	m := &fuseMount{layers: layers, target: t.TempDir(), stackOpts: sopts}
	m.Remount(t)
	t.Cleanup(func() { m.Unmount(t) })
	if onDisk {
		for i := range lowers {
			if !m.srv.u.index.LayerIndexed(i) {
				t.Fatalf("layer %d: on-disk index not used", i)
			}
		}
	}
	diffTrees(t, "fuse vs kernel", tree(t, m.Root()), want)
	checkDirents(t, filepath.Join(m.Root(), "d"))     // has xattr whiteouts: listed
	checkDirents(t, filepath.Join(m.Root(), "d/sub")) // listed from the index
	for _, n := range []string{"f02", "f05", "f13", "nope", "x/deep", "sub/s11"} {
		var st unix.Stat_t
		if err := unix.Lstat(filepath.Join(m.Root(), "d", n), &st); err == nil {
			t.Errorf("d/%s: visible, want hidden", n)
		}
	}
	// changes through FUSE in the indexed dir, then the kernel reads them
	p := func(n string) string { return filepath.Join(m.Root(), n) }
	for _, err := range []error{
		os.Remove(p("d/f04")),
		os.WriteFile(p("d/f05"), []byte("new"), 0o644), // over a whiteout
		os.Rename(p("d/f06"), p("d/renamed")),
		os.Chmod(p("d/f07"), 0o600),
		os.Mkdir(p("d/f08x"), 0o755),
	} {
		if err != nil {
			t.Fatal(err)
		}
	}
	checkDirents(t, filepath.Join(m.Root(), "d"))
	got := tree(t, m.Root())
	m.Unmount(t)
	diffTrees(t, "kernel after fuse changes", kernelTree(), got)
}

// TestNewDirNames: in a dir made through the mount, names are answered
// from memory; every way a name comes and goes keeps lookups right.
func TestNewDirNames(t *testing.T) {
	testutil.RequireFUSE(t)
	l := newCrossLayers(t)
	m := backend{}.Mount(t, l.layers())
	p := func(n string) string { return filepath.Join(m.Root(), n) }
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	exists := func(n string) bool {
		var st unix.Stat_t
		return unix.Lstat(p(n), &st) == nil
	}
	must(os.Mkdir(p("new"), 0o755))
	must(os.Mkdir(p("new2"), 0o755))
	if exists("new/a") {
		t.Fatal("new/a exists before creation")
	}
	must(os.WriteFile(p("new/a"), nil, 0o644))
	must(os.Symlink("x", p("new/s")))
	must(os.Link(p("new/a"), p("new/h")))
	must(unix.Mknod(p("new/fifo"), unix.S_IFIFO|0o644, 0))
	must(os.Mkdir(p("new/d"), 0o755))
	must(os.Rename(p("a"), p("new/froml")))  // lower file moved in
	must(os.Rename(p("new/a"), p("new2/a"))) // moved across new dirs
	must(os.Rename(p("new/s"), p("new/s2"))) // within
	must(unix.Renameat2(unix.AT_FDCWD, p("new/h"), unix.AT_FDCWD, p("new/fifo"), unix.RENAME_EXCHANGE))
	must(os.Remove(p("new/d")))
	for n, want := range map[string]bool{
		"new/a": false, "new2/a": true, "new/s": false, "new/s2": true, "new/h": true,
		"new/fifo": true, "new/d": false, "new/froml": true, "a": false,
	} {
		if got := exists(n); got != want {
			t.Errorf("%s: exists %v, want %v", n, got, want)
		}
	}
	must(os.WriteFile(p("new/a"), []byte("again"), 0o644))
	if b, err := os.ReadFile(p("new/a")); err != nil || string(b) != "again" {
		t.Errorf("re-created new/a: %q %v", b, err)
	}
}

// checkDirents: every entry of dir has d_ino and d_type equal to the
// st_ino and type its lstat reports (the listing of an indexed dir takes
// them from the index, not from a lookup).
func checkDirents(t *testing.T, dir string) {
	t.Helper()
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	buf := make([]byte, 1024) // several READDIR requests
	n := 0
	for {
		sz, err := unix.Getdents(fd, buf)
		if err != nil {
			t.Fatal(err)
		}
		if sz == 0 {
			break
		}
		for off := 0; off < sz; {
			rec := buf[off:sz]
			ino := *(*uint64)(unsafe.Pointer(&rec[0]))
			reclen := int(*(*uint16)(unsafe.Pointer(&rec[16])))
			typ := rec[18]
			name := string(rec[19:reclen])
			if i := strings.IndexByte(name, 0); i >= 0 {
				name = name[:i]
			}
			off += reclen
			if name == "." || name == ".." {
				continue
			}
			n++
			var st unix.Stat_t
			if err := unix.Lstat(filepath.Join(dir, name), &st); err != nil {
				t.Errorf("%s: listed, lstat: %v", name, err)
				continue
			}
			if ino != st.Ino || uint32(typ)<<12 != st.Mode&unix.S_IFMT {
				t.Errorf("%s: d_ino %d d_type %d, lstat ino %d mode %o", name, ino, typ, st.Ino, st.Mode)
			}
		}
	}
	if n == 0 {
		t.Errorf("%s: empty listing", dir)
	}
}
