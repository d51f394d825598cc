package archive

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"
	"golang.org/x/sys/unix"

	"github.com/stratafs/strata/internal/fstree"
	"github.com/stratafs/strata/internal/testutil"
)

func TestApplyEntryTypes(t *testing.T) {
	testutil.RequireRoot(t) // owners, device nodes, trusted.* xattrs
	stream := mkTar(t,
		withOwner(tDir("d", 0o750), 12, 34),
		withXattr(withOwner(tFile("d/file", "hello", 0o640), 1000, 1001), "user.note", "kept"),
		tFile("d/setuid", "x", 0o4755),
		tFile("d/setgid", "x", 0o2750),
		tDir("sticky", 0o1777),
		tSymlink("file", "d/sym"),
		tSymlink("/nowhere/at/all", "dangling"),
		withXattr(tSymlink("file", "d/xsym"), "trusted.note", "on a symlink"),
		tLink("d/file", "d/hardlink"),
		tFifo("fifo", 0o600),
		tChar("null", 1, 3),
		tBlock("loop", 7, 0),
		tFile("implicit/parent/file", "auto", 0o644),
		tFile("empty", "", 0o600),
	)
	dir, sum := applyNew(t, stream)
	tree := snap(t, dir)
	if sum.Entries != 14 || sum.ContentBytes != 5+1+1+4 || sum.Whiteouts != 0 || sum.Compression != Uncompressed {
		t.Errorf("summary = %+v", sum)
	}
	check := func(p string, f func(n *fstree.Node) bool, what string) {
		t.Helper()
		n := tree[p]
		if n == nil {
			t.Errorf("%s: missing", p)
			return
		}
		if !f(n) {
			t.Errorf("%s: want %s, got %+v", p, what, *n)
		}
	}
	check("d", func(n *fstree.Node) bool {
		return n.Type == fs.ModeDir && n.Perm == 0o750 && n.UID == 12 && n.GID == 34 && n.Mtime.Equal(t0)
	}, "dir 0750 12:34 t0 (set after its children)")
	check("d/file", func(n *fstree.Node) bool {
		return n.Perm == 0o640 && n.UID == 1000 && n.GID == 1001 && n.Size == 5 && n.Xattrs["user.note"] == "kept" && n.Mtime.Equal(t0)
	}, "file 0640 1000:1001 with xattr")
	check("d/setuid", func(n *fstree.Node) bool { return n.Perm == 0o4755 }, "setuid")
	check("d/setgid", func(n *fstree.Node) bool { return n.Perm == 0o2750 }, "setgid")
	check("sticky", func(n *fstree.Node) bool { return n.Perm == 0o1777 }, "sticky")
	check("d/sym", func(n *fstree.Node) bool { return n.Type == fs.ModeSymlink && n.Target == "file" }, "symlink")
	check("dangling", func(n *fstree.Node) bool { return n.Target == "/nowhere/at/all" }, "dangling symlink kept as data")
	check("d/xsym", func(n *fstree.Node) bool { return n.Xattrs["trusted.note"] == "on a symlink" }, "xattr on symlink")
	check("d/hardlink", func(n *fstree.Node) bool { return n.Link == "d/file" }, "hard link sharing d/file")
	check("fifo", func(n *fstree.Node) bool { return n.Type == fs.ModeNamedPipe && n.Perm == 0o600 }, "fifo")
	check("null", func(n *fstree.Node) bool {
		return n.Type == fs.ModeDevice|fs.ModeCharDevice && n.Rdev == unix.Mkdev(1, 3)
	}, "char 1/3")
	check("loop", func(n *fstree.Node) bool { return n.Type == fs.ModeDevice && n.Rdev == unix.Mkdev(7, 0) }, "block 7/0")
	check("implicit/parent", func(n *fstree.Node) bool { return n.Type == fs.ModeDir && n.Perm == 0o755 }, "implicit parent 0755")
	check("empty", func(n *fstree.Node) bool { return n.Size == 0 && n.Type == 0 }, "empty file")
}

func TestApplyDevicePolicy(t *testing.T) {
	stream := mkTar(t, tChar("null", 1, 3), tFile("f", "x", 0o644))
	dir, sum := applyNew(t, stream, WithDevices(DevicesSkip), WithoutChown())
	if sum.SkippedDevices != 1 {
		t.Errorf("SkippedDevices = %d", sum.SkippedDevices)
	}
	if _, err := os.Lstat(filepath.Join(dir, "null")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("skipped device exists: %v", err)
	}
	dir2 := t.TempDir()
	_, err := Apply(context.Background(), dir2, bytes.NewReader(stream), WithDevices(DevicesRefuse))
	if !errors.Is(err, ErrRefused) {
		t.Fatalf("DevicesRefuse: err = %v, want ErrRefused", err)
	}
}

func TestApplySetIDPolicy(t *testing.T) {
	stream := mkTar(t, tDir("sgid-dir", 0o2775), tFile("bin/su", "x", 0o4755), tFile("bin/wall", "y", 0o2755),
		tLink("bin/su", "bin/su-link"), tFile("bin/ls", "z", 0o755))
	perm := func(dir, name string) os.FileMode {
		t.Helper()
		fi, err := os.Lstat(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		return fi.Mode() & (os.ModePerm | os.ModeSetuid | os.ModeSetgid)
	}
	keep, _ := applyNew(t, stream, WithoutChown())
	if got := perm(keep, "bin/su"); got != 0o755|os.ModeSetuid {
		t.Errorf("SetIDKeep: bin/su mode %v", got)
	}
	strip, sum := applyNew(t, stream, WithoutChown(), WithSetID(SetIDStrip))
	if sum.StrippedSetID != 2 {
		t.Errorf("StrippedSetID = %d, want 2", sum.StrippedSetID)
	}
	for name, want := range map[string]os.FileMode{
		"bin/su": 0o755, "bin/su-link": 0o755, "bin/wall": 0o755, "bin/ls": 0o755,
		"sgid-dir": 0o775 | os.ModeSetgid, // a set-group-ID dir is kept
	} {
		if got := perm(strip, name); got != want {
			t.Errorf("SetIDStrip: %s mode %v, want %v", name, got, want)
		}
	}
	_, err := Apply(context.Background(), t.TempDir(), bytes.NewReader(stream), WithoutChown(), WithSetID(SetIDRefuse))
	if !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), "bin/su") {
		t.Fatalf("SetIDRefuse: err = %v, want ErrRefused naming bin/su", err)
	}
}

func TestApplyWhiteoutsAndOpaque(t *testing.T) {
	testutil.RequireRoot(t) // mknod whiteouts, trusted.overlay.opaque
	const opq = "trusted.overlay.opaque"
	type want struct {
		whiteouts []string
		opaque    []string
		files     []string // must exist as non-whiteouts
		absent    []string
	}
	cases := []struct {
		name string
		ents []ent
		want want
		sum  func(Summary) bool
	}{
		{"WhiteoutBeforeSibling", []ent{tDir("etc", 0o755), tWhiteout("etc/shadow"), tFile("etc/group", "g", 0o644)},
			want{whiteouts: []string{"etc/shadow"}, files: []string{"etc/group"}}, func(s Summary) bool { return s.Whiteouts == 1 }},
		{"WhiteoutAfterSibling", []ent{tDir("etc", 0o755), tFile("etc/group", "g", 0o644), tWhiteout("etc/shadow")},
			want{whiteouts: []string{"etc/shadow"}, files: []string{"etc/group"}}, nil},
		{"WhiteoutInRoot", []ent{tWhiteout("gone")}, want{whiteouts: []string{"gone"}}, nil},
		{"WhiteoutImplicitParent", []ent{tWhiteout("a/b/gone")}, want{whiteouts: []string{"a/b/gone"}, files: []string{"a/b"}}, nil},
		{"OpaqueBeforeSiblings", []ent{tDir("etc", 0o755), tOpaque("etc"), tFile("etc/group", "g", 0o644)},
			want{opaque: []string{"etc"}, files: []string{"etc/group"}}, func(s Summary) bool { return s.OpaqueDirs == 1 }},
		{"OpaqueAfterSiblings", []ent{tDir("etc", 0o755), tFile("etc/group", "g", 0o644), tOpaque("etc")},
			want{opaque: []string{"etc"}, files: []string{"etc/group"}}, nil},
		{"OpaqueBeforeItsDir", []ent{tOpaque("etc"), tDir("etc", 0o700)}, want{opaque: []string{"etc"}}, nil},
		{"OpaqueRoot", []ent{tOpaque("."), tFile("f", "", 0o644)}, want{opaque: []string{"."}}, nil},
		// OCI: whiteouts apply to lower layers only; the layer keeps its own entry.
		{"WhiteoutThenSameNameFile", []ent{tWhiteout("x"), tFile("x", "mine", 0o644)},
			want{files: []string{"x"}}, func(s Summary) bool { return s.Whiteouts == 0 }},
		{"SameNameFileThenWhiteout", []ent{tFile("x", "mine", 0o644), tWhiteout("x")},
			want{files: []string{"x"}}, func(s Summary) bool { return s.Whiteouts == 0 }},
		// ... and a directory of that name hides the lower one entirely.
		{"WhiteoutThenSameNameDir", []ent{tWhiteout("d"), tDir("d", 0o755), tFile("d/new", "n", 0o644)},
			want{opaque: []string{"d"}, files: []string{"d/new"}}, func(s Summary) bool { return s.Whiteouts == 0 && s.OpaqueDirs == 1 }},
		{"SameNameDirThenWhiteout", []ent{tDir("d", 0o755), tFile("d/new", "n", 0o644), tWhiteout("d")},
			want{opaque: []string{"d"}, files: []string{"d/new"}}, nil},
		{"WhiteoutThenChildImpliesDir", []ent{tWhiteout("d"), tFile("d/new", "n", 0o644)},
			want{opaque: []string{"d"}, files: []string{"d/new"}}, nil},
		{"TarCharDevice00IsWhiteout", []ent{tChar("gone", 0, 0)}, want{whiteouts: []string{"gone"}}, func(s Summary) bool { return s.Whiteouts == 1 }},
		{"WhiteoutDirectoryNameIsPlain", []ent{tFile(".wh.etc/somefile", "x", 0o644)}, want{files: []string{".wh.etc/somefile"}}, nil},
		{"ReplaceDirByFile", []ent{tDir("d", 0o755), tFile("d/x", "x", 0o644), tFile("d", "now a file", 0o644)},
			want{files: []string{"d"}, absent: []string{"d/x"}}, nil},
		{"ReplaceFileBySymlink", []ent{tFile("f", "x", 0o644), tSymlink("elsewhere", "f")}, want{files: []string{"f"}}, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir, sum := applyNew(t, mkTar(t, tc.ents...))
			for _, p := range tc.want.whiteouts {
				var st unix.Stat_t
				if err := unix.Lstat(filepath.Join(dir, p), &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFCHR || st.Rdev != 0 {
					t.Errorf("%s: not a whiteout (err %v, mode %o)", p, err, st.Mode)
				}
			}
			for _, p := range tc.want.opaque {
				buf := make([]byte, 8)
				n, err := unix.Lgetxattr(filepath.Join(dir, p), opq, buf)
				if err != nil || string(buf[:n]) != "y" {
					t.Errorf("%s: not opaque (%v)", p, err)
				}
			}
			for _, p := range tc.want.files {
				var st unix.Stat_t
				if err := unix.Lstat(filepath.Join(dir, p), &st); err != nil || (st.Mode&unix.S_IFMT == unix.S_IFCHR && st.Rdev == 0) {
					t.Errorf("%s: missing or a whiteout (%v)", p, err)
				}
			}
			for _, p := range tc.want.absent {
				if _, err := os.Lstat(filepath.Join(dir, p)); !errors.Is(err, fs.ErrNotExist) && !errors.Is(err, unix.ENOTDIR) {
					t.Errorf("%s: exists (%v)", p, err)
				}
			}
			if tc.sum != nil && !tc.sum(sum) {
				t.Errorf("summary %+v", sum)
			}
		})
	}
}

func TestApplyInvalidWhiteouts(t *testing.T) {
	for _, name := range []string{".wh..", "etc/.wh..", ".wh...", "etc/.wh...", ".wh..wh.foo", ".wh."} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			_, err := Apply(context.Background(), dir, bytes.NewReader(mkTar(t, tFile(name, "", 0o644))))
			if !errors.Is(err, ErrInvalidArchive) {
				t.Fatalf("err = %v, want ErrInvalidArchive", err)
			}
		})
	}
}

// TestApplyDeviceOutOfRange: a major or minor number beyond 32 bits is
// an invalid archive, not truncated into another device.
func TestApplyDeviceOutOfRange(t *testing.T) {
	testutil.RequireRoot(t)
	for _, e := range []ent{tChar("c", 1<<32+1, 3), tBlock("b", 7, -1)} {
		e.hdr.Format = tar.FormatGNU // base-256 numbers: neither USTAR nor PAX encodes these
		t.Run(e.hdr.Name, func(t *testing.T) {
			dir := t.TempDir()
			_, err := Apply(context.Background(), dir, bytes.NewReader(mkTar(t, e)))
			if !errors.Is(err, ErrInvalidArchive) {
				t.Fatalf("err = %v, want ErrInvalidArchive", err)
			}
		})
	}
}

func TestApplyStripsOverlayXattrs(t *testing.T) {
	testutil.RequireRoot(t)
	stream := mkTar(t,
		withXattr(withXattr(withXattr(tFile("innocent", "x", 0o644),
			"trusted.overlay.metacopy", ""),
			"trusted.overlay.redirect", "/etc/shadow"),
			"user.overlay.redirect", "/etc/shadow"),
		withXattr(withXattr(tDir("d", 0o755), "trusted.overlay.opaque", "y"), "user.keep", "1"),
	)
	dir, sum := applyNew(t, stream)
	if sum.StrippedXattrs != 4 {
		t.Errorf("StrippedXattrs = %d, want 4", sum.StrippedXattrs)
	}
	tree := snap(t, dir)
	for p, n := range tree {
		for k := range n.Xattrs {
			if strings.Contains(k, ".overlay.") {
				t.Errorf("%s: overlay xattr %s survived", p, k)
			}
		}
	}
	if tree["d"].Xattrs["user.keep"] != "1" {
		t.Errorf("ordinary xattr lost: %v", tree["d"].Xattrs)
	}
}

func TestApplyCompressionAndDigests(t *testing.T) {
	plain := mkTar(t, tDir("a", 0o755), tFile("a/b", strings.Repeat("data", 1000), 0o644))
	diffID := digest.FromBytes(plain)
	for _, c := range []Compression{Uncompressed, Gzip, Zstd} {
		t.Run(c.String(), func(t *testing.T) {
			stream := compress(t, c, plain)
			wantDiffID := diffID
			// Trailing bytes after the tar are read and hashed.
			if c == Uncompressed {
				stream = append(stream, make([]byte, 4096)...)
				wantDiffID = digest.FromBytes(stream)
			}
			want := digest.FromBytes(stream)
			_, sum := applyNew(t, stream, WithExpectedDigest(want), WithExpectedDiffID(wantDiffID), WithoutChown())
			if sum.Compression != c || sum.Digest != want || sum.Size != int64(len(stream)) {
				t.Errorf("summary %+v, want %s digest %s size %d", sum, c, want, len(stream))
			}
			if c != Uncompressed && (sum.DiffID != diffID || sum.UncompressedSize != int64(len(plain))) {
				t.Errorf("diff ID %s size %d, want %s %d", sum.DiffID, sum.UncompressedSize, diffID, len(plain))
			}
		})
	}
}

func TestApplyRejectsWrongDigest(t *testing.T) {
	stream := compress(t, Gzip, mkTar(t, tFile("f", "x", 0o644)))
	wrong := digest.FromString("something else")
	for name, opt := range map[string]ApplyOption{
		"Digest": WithExpectedDigest(wrong),
		"DiffID": WithExpectedDiffID(wrong),
	} {
		t.Run(name, func(t *testing.T) {
			_, err := Apply(context.Background(), t.TempDir(), bytes.NewReader(stream), opt, WithoutChown())
			if !errors.Is(err, ErrDigestMismatch) {
				t.Fatalf("err = %v, want ErrDigestMismatch", err)
			}
		})
	}
	_, err := Apply(context.Background(), t.TempDir(), bytes.NewReader(stream), WithExpectedDigest("sha256:nothex"))
	if err == nil {
		t.Fatal("invalid expected digest accepted")
	}
}

func TestApplyTruncated(t *testing.T) {
	big := make([]byte, 300<<10)
	for i := range big {
		big[i] = byte(i * 7 % 251)
	}
	plain := mkTar(t, tFile("a", string(big), 0o644), tFile("b", "tail", 0o644))
	for _, c := range []Compression{Uncompressed, Gzip, Zstd} {
		full := compress(t, c, plain)
		for _, cut := range []int{len(full) / 2, len(full) - 5} {
			if c == Uncompressed && cut == len(full)-5 {
				cut = 512 + len(big)/2 // in the middle of a's content
			}
			t.Run(c.String(), func(t *testing.T) {
				_, err := Apply(context.Background(), t.TempDir(), bytes.NewReader(full[:cut]), WithoutChown())
				if !errors.Is(err, io.ErrUnexpectedEOF) {
					t.Fatalf("cut at %d of %d: err = %v, want io.ErrUnexpectedEOF", cut, len(full), err)
				}
			})
		}
	}
}

func TestApplyContextCancel(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := Apply(ctx, t.TempDir(), bytes.NewReader(mkTar(t, tFile("f", "x", 0o644))))
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v", err)
	}
}

func TestSyncDir(t *testing.T) {
	if err := SyncDir(t.TempDir()); err != nil {
		t.Fatal(err)
	}
}
