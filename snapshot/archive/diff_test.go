package archive

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	"golang.org/x/sys/unix"

	"github.com/stratafs/strata/internal/fstree"
	"github.com/stratafs/strata/internal/testutil"
	"github.com/stratafs/strata/overlay"
)

// richLayer has every entry type, whiteouts, opaque dirs, xattrs, hard
// links, special modes and sub-second times.
func richLayer(t testing.TB) []byte {
	t1 := t0.Add(90 * time.Minute)
	return mkTar(t,
		tDir("bin", 0o755),
		withOwner(tFile("bin/tool", "#!/bin/sh\necho tool\n", 0o4755), 0, 50),
		tLink("bin/tool", "bin/tool-alias"),
		tSymlink("tool", "bin/sh"),
		withXattr(tFile("bin/cap", "caps", 0o755), "security.capability", "\x01\x00\x00\x02\x00\x20\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00"),
		withTime(tDir("etc", 0o750), t1),
		tOpaque("etc"),
		withXattr(withOwner(tFile("etc/passwd", "root:x:0:0\n", 0o644), 1000, 1000), "user.mime", "text/plain"),
		tWhiteout("etc/shadow"),
		tDir("tmp", 0o1777),
		tFifo("tmp/fifo", 0o622),
		tChar("tmp/null", 1, 3),
		tBlock("tmp/loop0", 7, 0),
		tWhiteout("gone"),
		tDir("deep/a/b/c", 0o700),
		tFile("deep/a/b/c/leaf", strings.Repeat("leaf ", 10000), 0o600),
		tFile("empty", "", 0o000),
	)
}

func TestRoundTrip(t *testing.T) {
	testutil.RequireRoot(t)
	stream := richLayer(t)
	first, _ := applyNew(t, stream)
	want := snap(t, first)
	for _, c := range []Compression{Uncompressed, Gzip, Zstd} {
		t.Run(c.String(), func(t *testing.T) {
			out, dsum := writeDiff(t, first, nil, WithCompression(c))
			again, _ := writeDiff(t, first, nil, WithCompression(c))
			if !bytes.Equal(out, again) {
				t.Error("WriteDiff is not deterministic")
			}
			if dsum.Digest != digest.FromBytes(out) || dsum.Size != int64(len(out)) || dsum.Compression != c {
				t.Errorf("summary %+v does not describe the %d bytes written", dsum, len(out))
			}
			if dsum.Whiteouts != 2 || dsum.OpaqueDirs != 1 {
				t.Errorf("summary %+v: want 2 whiteouts, 1 opaque dir", dsum)
			}
			second, asum := applyNew(t, out, WithExpectedDigest(dsum.Digest), WithExpectedDiffID(dsum.DiffID))
			if asum.Compression != c || asum.UncompressedSize != dsum.UncompressedSize {
				t.Errorf("apply summary %+v vs diff summary %+v", asum, dsum)
			}
			requireSameTree(t, want, snap(t, second), fstree.WithoutRoot())
		})
	}
}

func TestWriteDiffEntries(t *testing.T) {
	testutil.RequireRoot(t)
	layer, _ := applyNew(t, richLayer(t))
	out, _ := writeDiff(t, layer, nil)
	got := tarNames(t, out)
	want := []string{
		"bin/", "bin/cap", "bin/sh", "bin/tool", "bin/tool-alias",
		"deep/", "deep/a/", "deep/a/b/", "deep/a/b/c/", "deep/a/b/c/leaf",
		"empty",
		"etc/", "etc/.wh..wh..opq", "etc/passwd", "etc/.wh.shadow", // sorted by the deleted name
		".wh.gone",
		"tmp/", "tmp/fifo", "tmp/loop0", "tmp/null",
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("entries:\n got %q\nwant %q", got, want)
	}
	tr := tar.NewReader(bytes.NewReader(out))
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if h.Format != tar.FormatPAX && h.Format != tar.FormatUSTAR {
			t.Errorf("%s: format %v", h.Name, h.Format)
		}
		for k := range h.PAXRecords {
			if strings.Contains(k, ".overlay.") {
				t.Errorf("%s: exported overlay xattr %s", h.Name, k)
			}
		}
		if h.Name == "bin/tool-alias" && (h.Typeflag != tar.TypeLink || h.Linkname != "bin/tool") {
			t.Errorf("hard link exported as %c -> %q", h.Typeflag, h.Linkname)
		}
	}
}

// flatApply applies a layer tar to one plain directory with OCI semantics:
// deletions (whiteouts, opaque markers) apply to what lower layers left,
// then the layer's entries are extracted. It is a deliberately simple,
// independent oracle for trusted test streams.
func flatApply(t *testing.T, root string, stream []byte) {
	t.Helper()
	type entry struct {
		hdr  *tar.Header
		body []byte
	}
	var ents []entry
	tr := tar.NewReader(bytes.NewReader(stream))
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		ents = append(ents, entry{h, b})
	}
	for _, e := range ents {
		dir, b := filepath.Split(filepath.Clean(e.hdr.Name))
		switch {
		case b == overlay.OCIOpaqueMarker:
			names, _ := os.ReadDir(filepath.Join(root, dir))
			for _, n := range names {
				must(t, os.RemoveAll(filepath.Join(root, dir, n.Name())))
			}
		case strings.HasPrefix(b, overlay.OCIWhiteoutPrefix):
			must(t, os.RemoveAll(filepath.Join(root, dir, strings.TrimPrefix(b, overlay.OCIWhiteoutPrefix))))
		}
	}
	type dt struct {
		p  string
		mt time.Time
	}
	var dirs []dt
	for _, e := range ents {
		h := e.hdr
		p := filepath.Join(root, filepath.Clean(h.Name))
		if strings.HasPrefix(filepath.Base(p), overlay.OCIWhiteoutPrefix) {
			continue
		}
		must(t, os.MkdirAll(filepath.Dir(p), 0o755))
		if h.Typeflag != tar.TypeDir {
			must(t, os.RemoveAll(p))
		} else if fi, err := os.Lstat(p); err == nil && !fi.IsDir() {
			must(t, os.Remove(p))
		}
		switch h.Typeflag {
		case tar.TypeDir:
			if err := os.Mkdir(p, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
				t.Fatal(err)
			}
			dirs = append(dirs, dt{p, h.ModTime})
		case tar.TypeReg:
			must(t, os.WriteFile(p, e.body, 0o600))
		case tar.TypeSymlink:
			must(t, os.Symlink(h.Linkname, p))
		case tar.TypeLink:
			must(t, os.Link(filepath.Join(root, h.Linkname), p))
			continue
		case tar.TypeFifo:
			must(t, unix.Mkfifo(p, 0o600))
		default:
			t.Fatalf("flatApply: type %c", h.Typeflag)
		}
		must(t, os.Lchown(p, h.Uid, h.Gid))
		for k, v := range h.PAXRecords {
			if x, ok := strings.CutPrefix(k, "SCHILY.xattr."); ok {
				must(t, unix.Lsetxattr(p, x, []byte(v), 0))
			}
		}
		if h.Typeflag != tar.TypeSymlink {
			must(t, os.Chmod(p, os.FileMode(h.Mode&0o777)|modeBits(h.Mode)))
		}
		ts := []unix.Timespec{unix.NsecToTimespec(h.ModTime.UnixNano()), unix.NsecToTimespec(h.ModTime.UnixNano())}
		must(t, unix.UtimesNanoAt(unix.AT_FDCWD, p, ts, unix.AT_SYMLINK_NOFOLLOW))
	}
	for i := len(dirs) - 1; i >= 0; i-- {
		ts := []unix.Timespec{unix.NsecToTimespec(dirs[i].mt.UnixNano()), unix.NsecToTimespec(dirs[i].mt.UnixNano())}
		must(t, unix.UtimesNanoAt(unix.AT_FDCWD, dirs[i].p, ts, unix.AT_SYMLINK_NOFOLLOW))
	}
}

func modeBits(m int64) os.FileMode {
	var f os.FileMode
	if m&0o4000 != 0 {
		f |= os.ModeSetuid
	}
	if m&0o2000 != 0 {
		f |= os.ModeSetgid
	}
	if m&0o1000 != 0 {
		f |= os.ModeSticky
	}
	return f
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func mountRO(t *testing.T, layers []string) string {
	t.Helper()
	s, err := overlay.NewStack(layers)
	if err != nil {
		t.Fatal(err)
	}
	mnt := t.TempDir()
	if err := overlay.Mount(s, mnt, overlay.MountOptions{ReadOnly: true}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := overlay.Unmount(mnt); err != nil {
			t.Errorf("unmount: %v", err)
		}
	})
	return mnt
}

// threeLayers are the changes of three stacked layers. Every layer carries
// the headers of the dirs it changes, as image builders write them.
func threeLayers(t *testing.T) [][]byte {
	t1, t2, t3 := t0.Add(time.Hour), t0.Add(2*time.Hour), t0.Add(3*time.Hour)
	l1 := mkTar(t,
		tDir("etc", 0o755),
		withXattr(tFile("etc/passwd", "root\n", 0o644), "user.v", "1"),
		tFile("etc/shadow", "secret", 0o600),
		tDir("usr", 0o755), tDir("usr/bin", 0o755),
		tFile("usr/bin/tool", "v1", 0o4755),
		tLink("usr/bin/tool", "usr/bin/tool2"),
		tSymlink("tool", "usr/bin/sh"),
		tDir("var", 0o755), tDir("var/lib", 0o755), tFile("var/lib/db", "db", 0o644), tFifo("var/fifo", 0o600),
		tDir("data", 0o755), tFile("data/a", "a", 0o644), tFile("data/b", "b", 0o644),
		tDir("data/sub", 0o755), tFile("data/sub/c", "c", 0o644),
		tDir("keep", 0o755), tFile("keep/x", "x", 0o644),
	)
	l2 := mkTar(t,
		withTime(tDir("etc", 0o755), t1),
		tWhiteout("etc/shadow"),
		withXattr(withTime(tFile("etc/passwd", "root\nuser\n", 0o644), t1), "user.v", "2"),
		withTime(tDir("data", 0o700), t1),
		withTime(tFile("data/new", "new", 0o644), t1),
		tOpaque("data"), // after a sibling: order must not matter
		withTime(tDir("var", 0o755), t1),
		tWhiteout("var/lib"),
		withTime(tDir("usr", 0o755), t1), withTime(tDir("usr/bin", 0o755), t1),
		withTime(tFile("usr/bin/newfile", "nf", 0o755), t1),
	)
	l3 := mkTar(t,
		tWhiteout("var"), // with var/ below in the same layer: only var/new remains
		withTime(tDir("var", 0o711), t2),
		withTime(tFile("var/new", "fresh", 0o644), t2),
		withTime(tDir("etc", 0o755), t2),
		withTime(withOwner(tFile("etc/group", "g", 0o640), 0, 42), t2),
		withTime(tDir("usr", 0o755), t2), withTime(tDir("usr/bin", 0o755), t2),
		withTime(tFile("usr/bin/tool", "v2", 0o2711), t3),
		tWhiteout("usr/bin/sh"),
		withTime(tSymlink("newfile", "usr/bin/sh2"), t2),
		withTime(tDir("data", 0o700), t2),
		withTime(tDir("data/sub", 0o755), t2), // a fresh dir in an opaque lower one
		withTime(tFile("data/sub/d", "d", 0o644), t2),
	)
	return [][]byte{l1, l2, l3}
}

// TestFlatOracle stacks three imported layers under kernel overlayfs and
// compares the mounted tree with the same changes applied to one flat dir.
func TestFlatOracle(t *testing.T) {
	testutil.RequireOverlay(t)
	layers := threeLayers(t)
	flat := t.TempDir()
	var dirs []string // topmost first
	for _, l := range layers {
		flatApply(t, flat, l)
		d, _ := applyNew(t, l)
		dirs = append([]string{d}, dirs...)
	}
	mnt := mountRO(t, dirs)
	requireSameTree(t, snap(t, flat), snap(t, mnt), fstree.WithoutRoot())

	// The same chain after a round trip of every layer through WriteDiff.
	var again []string
	for i := len(dirs) - 1; i >= 0; i-- {
		out, _ := writeDiff(t, dirs[i], dirs[i+1:], WithCompression(Zstd))
		d, _ := applyNew(t, out)
		again = append([]string{d}, again...)
	}
	requireSameTree(t, snap(t, flat), snap(t, mountRO(t, again)), fstree.WithoutRoot())
}

// TestWriteDiffKernelUpper lets kernel overlayfs (redirect_dir=on,
// metacopy=on) write an upper layer, exports it, imports the export as a
// plain layer and checks that the stack shows the same tree.
func TestWriteDiffKernelUpper(t *testing.T) {
	testutil.RequireOverlay(t)
	lower, _ := applyNew(t, threeLayers(t)[0])
	upper, work, mnt := t.TempDir(), t.TempDir(), t.TempDir()
	s, err := overlay.NewStack([]string{lower}, overlay.WithUpper(upper, work))
	if err != nil {
		t.Fatal(err)
	}
	if err := overlay.Mount(s, mnt, overlay.MountOptions{}); err != nil {
		t.Fatal(err)
	}
	mounted := true
	t.Cleanup(func() {
		if mounted {
			overlay.Unmount(mnt)
		}
	})
	m := func(p string) string { return filepath.Join(mnt, p) }
	must(t, os.Chmod(m("etc/passwd"), 0o600))              // metacopy copy-up
	must(t, os.Lchown(m("usr/bin/tool"), 7, 8))            // metacopy, breaks the hard link
	must(t, os.Rename(m("data"), m("data2")))              // redirected dir
	must(t, os.WriteFile(m("data2/added"), nil, 0o644))    // new file in it
	must(t, os.Remove(m("data2/a")))                       // whiteout inside it
	must(t, os.Rename(m("data2/sub/c"), m("data2/sub/e"))) // metacopy with redirect
	must(t, os.Remove(m("usr/bin/sh")))                    // whiteout
	must(t, os.RemoveAll(m("var/lib")))                    // whiteout of a dir
	must(t, os.Mkdir(m("var/lib"), 0o700))                 // recreated: opaque
	must(t, os.WriteFile(m("var/lib/fresh"), []byte("f"), 0o644))
	want := snap(t, mnt)
	must(t, overlay.Unmount(mnt))
	mounted = false

	f := overlay.Format{}
	metacopy, _ := f.IsMetacopy(filepath.Join(upper, "etc/passwd"))
	_, redirected, _ := f.Redirect(filepath.Join(upper, "data2"))
	out, dsum := writeDiff(t, upper, []string{lower})
	t.Logf("diff summary: %+v", dsum)
	t.Logf("entries: %q", tarNames(t, out))
	if metacopy && dsum.MetacopyFiles < 2 {
		t.Errorf("kernel wrote metacopy files, export resolved %d", dsum.MetacopyFiles)
	} else if !metacopy {
		t.Log("kernel wrote no metacopy for etc/passwd; metacopy path not exercised")
	}
	if redirected && dsum.RedirectedDirs != 1 {
		t.Errorf("kernel wrote a redirect, export saw %d", dsum.RedirectedDirs)
	} else if !redirected {
		t.Log("kernel wrote no redirect for data2; redirect path not exercised")
	}
	for _, n := range tarNames(t, out) {
		if n == "data/" || strings.HasPrefix(n, "data/") && n != "data" {
			t.Errorf("export has %q under the old name", n)
		}
	}
	imported, _ := applyNew(t, out)
	requireSameTree(t, want, snap(t, mountRO(t, []string{imported, lower})), fstree.WithoutRoot())

	st, err := DiffStat(context.Background(), upper, []string{lower})
	if err != nil {
		t.Fatal(err)
	}
	kinds := map[string]ChangeKind{}
	for _, c := range st.Changes {
		kinds[c.Path] = c.Kind
	}
	for p, k := range map[string]ChangeKind{
		"etc/passwd": Modified, "usr/bin/sh": Deleted, "data": Deleted,
		"data2": Added, "data2/added": Added, "var/lib/fresh": Added, "var/lib": Modified,
	} {
		if kinds[p] != k {
			t.Errorf("DiffStat %s = %v, want %v (all: %+v)", p, kinds[p], k, st.Changes)
		}
	}
	if st.Added+st.Modified+st.Deleted != len(st.Changes) {
		t.Errorf("counts %+v do not add up", st)
	}
}

func TestUserXattrFormat(t *testing.T) {
	testutil.RequireRoot(t) // mknod whiteouts
	f := overlay.Format{UserXattr: true}
	stream := mkTar(t, tDir("d", 0o755), tOpaque("d"), tFile("d/x", "x", 0o644), tWhiteout("gone"),
		withXattr(tFile("forged", "", 0o644), "user.overlay.redirect", "/etc"))
	layer, sum := applyNew(t, stream, WithFormat(f))
	if sum.OpaqueDirs != 1 || sum.StrippedXattrs != 1 {
		t.Errorf("summary %+v", sum)
	}
	tree := snap(t, layer)
	if tree["d"].Xattrs["user.overlay.opaque"] != "y" || tree["d"].Xattrs["trusted.overlay.opaque"] != "" {
		t.Errorf("opaque xattrs of d: %v", tree["d"].Xattrs)
	}
	out, dsum := writeDiff(t, layer, nil, WithDiffFormat(f))
	if dsum.OpaqueDirs != 1 || dsum.Whiteouts != 1 {
		t.Errorf("diff summary %+v", dsum)
	}
	for _, n := range tarNames(t, out) {
		if n == "d/.wh..wh..opq" {
			return
		}
	}
	t.Errorf("no opaque marker in %q", tarNames(t, out))
}

func TestWriteDiffContextCancel(t *testing.T) {
	dir := t.TempDir()
	for i := 0; i < 300; i++ {
		must(t, os.WriteFile(filepath.Join(dir, "f"+strings.Repeat("x", i%7)+string(rune('a'+i%26))+time.Duration(i).String()), nil, 0o644))
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := WriteDiff(ctx, io.Discard, dir, nil); !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v", err)
	}
}
