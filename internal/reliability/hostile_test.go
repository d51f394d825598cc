package reliability

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"

	"github.com/klauspost/compress/zstd"
	"github.com/opencontainers/go-digest"
	"golang.org/x/sys/unix"

	"github.com/stratafs/strata/internal/testutil"
	"github.com/stratafs/strata/snapshot"
	"github.com/stratafs/strata/snapshot/archive"
)

// layerDir returns the dir of the committed snapshot name, which has no
// parent (its view is a bind mount of that dir).
func layerDir(t *testing.T, s *snapshot.Store, name string) string {
	t.Helper()
	ctx := context.Background()
	key := "inspect-" + name
	ms, err := s.View(ctx, key, name)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Remove(context.Background(), key) })
	if len(ms) != 1 || ms[0].Type != "bind" {
		t.Fatalf("view of %s: %+v, want one bind mount", name, ms)
	}
	return ms[0].Source
}

func gz(t testing.TB, b []byte) []byte {
	var buf bytes.Buffer
	w := gzip.NewWriter(&buf)
	w.Write(b)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func zst(t testing.TB, b []byte) []byte {
	var buf bytes.Buffer
	w, err := zstd.NewWriter(&buf)
	if err != nil {
		t.Fatal(err)
	}
	w.Write(b)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// nulName returns a tar whose one entry has a PAX path with a NUL in it
// (archive/tar refuses to write one, so it is patched in).
func nulName(t testing.TB, escape string) []byte {
	marker := "NULMARK"
	name := strings.Repeat("d", 300) + "/" + marker + escape
	b := mkTar(t, file(name, "x"))
	i := bytes.LastIndex(b, []byte(marker))
	if i < 512 {
		t.Fatalf("marker not in the PAX record")
	}
	b[i+3] = 0 // "NUL\x00ARK…": the PAX record body is not checksummed
	return b
}

type hostileCase struct {
	name   string
	opts   []archive.ApplyOption
	stream func(t *testing.T, sb *sandbox) []byte
	// want is the error the import must wrap; nil means the documented
	// safe result, checked by check.
	want  []error
	check func(t *testing.T, layer string, sum archive.Summary)
}

func fileIs(p, content string) func(*testing.T, string, archive.Summary) {
	return func(t *testing.T, layer string, _ archive.Summary) {
		t.Helper()
		b, err := os.ReadFile(filepath.Join(layer, p))
		if err != nil || string(b) != content {
			t.Errorf("%s = %q, %v; want %q", p, b, err, content)
		}
	}
}

func hostileCases() []hostileCase {
	tars := func(hs ...hdr) func(*testing.T, *sandbox) []byte {
		return func(t *testing.T, _ *sandbox) []byte { return mkTar(t, hs...) }
	}
	inval := []error{snapshot.ErrInvalidArgument, archive.ErrInvalidArchive}
	unsafe := []error{snapshot.ErrInvalidArgument, archive.ErrUnsafePath}
	plain := mkTarStatic(file("a", strings.Repeat("payload ", 40000)), file("b", "tail"))
	return []hostileCase{
		{name: "DotDot", stream: tars(file("../escaped", "x")), want: unsafe},
		{name: "DotDotDeep", stream: tars(dir("a"), file("a/../../../escaped", "x")), want: unsafe},
		{name: "AbsoluteIsLayerRelative", stream: tars(file("/etc/passwd", "inside")), check: fileIs("etc/passwd", "inside")},
		{name: "AbsoluteSentinelPath", stream: func(t *testing.T, sb *sandbox) []byte {
			return mkTar(t, file(sb.sentinel+"/etc/passwd", "inside"))
		}, check: nil},
		{name: "SymlinkToSentinelThenWrite", stream: func(t *testing.T, sb *sandbox) []byte {
			return mkTar(t, symlink("out", sb.sentinel+"/etc"), file("out/passwd", "pwned"))
		}, want: inval},
		{name: "SymlinkDotDotThenWrite", stream: tars(dir("etc"), symlink("up", "../../../../../../etc"), file("up/passwd", "inside")),
			check: fileIs("etc/passwd", "inside")},
		{name: "SymlinkRootThenWriteDeep", stream: tars(symlink("r", "/"), dir("r/tmp"), file("r/tmp/x", "inside")), check: fileIs("tmp/x", "inside")},
		{name: "SymlinkReplacedByDirThenWrite", stream: func(t *testing.T, sb *sandbox) []byte {
			return mkTar(t, symlink("d", sb.sentinel), dir("d"), file("d/etc", "inside"))
		}, check: fileIs("d/etc", "inside")},
		{name: "HardlinkOutsideAbsolute", stream: func(t *testing.T, sb *sandbox) []byte {
			return mkTar(t, hardlink("pw", sb.sentinel+"/etc/passwd"))
		}, want: inval},
		{name: "HardlinkDotDot", stream: tars(hardlink("pw", "../sentinel/etc/passwd")), want: unsafe},
		{name: "HardlinkToEscapingSymlink", stream: func(t *testing.T, sb *sandbox) []byte {
			// The link links the symlink itself; a write through the new
			// name is resolved in the layer.
			return mkTar(t, symlink("s", sb.sentinel+"/data"), hardlink("h", "s"), file("h/secret", "pwned"))
		}, want: inval},
		{name: "HardlinkThroughSymlinkedDir", stream: func(t *testing.T, sb *sandbox) []byte {
			return mkTar(t, symlink("s", sb.sentinel+"/data"), hardlink("h", "s/secret"))
		}, want: inval},
		{name: "HardlinkToDir", stream: tars(dir("d"), hardlink("h", "d")), want: inval},
		{name: "DeviceRefused", opts: []archive.ApplyOption{archive.WithDevices(archive.DevicesRefuse)},
			stream: tars(hdr{tar.Header{Name: "null", Typeflag: tar.TypeChar, Devmajor: 1, Devminor: 3, Mode: 0o666}, ""}),
			want:   []error{snapshot.ErrInvalidArgument, archive.ErrRefused}},
		{name: "DeviceSkipped", opts: []archive.ApplyOption{archive.WithDevices(archive.DevicesSkip)},
			stream: tars(hdr{tar.Header{Name: "sda", Typeflag: tar.TypeBlock, Devmajor: 8, Devminor: 0, Mode: 0o660}, ""}, file("f", "x")),
			check: func(t *testing.T, layer string, sum archive.Summary) {
				if _, err := os.Lstat(filepath.Join(layer, "sda")); !errors.Is(err, os.ErrNotExist) {
					t.Errorf("skipped device exists: %v", err)
				}
				if sum.SkippedDevices != 1 {
					t.Errorf("SkippedDevices = %d", sum.SkippedDevices)
				}
			}},
		{name: "DeviceKeptAsRoot", stream: tars(hdr{tar.Header{Name: "null", Typeflag: tar.TypeChar, Devmajor: 1, Devminor: 3, Mode: 0o666}, ""}),
			check: func(t *testing.T, layer string, _ archive.Summary) {
				var st unix.Stat_t
				if err := unix.Lstat(filepath.Join(layer, "null"), &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFCHR || st.Rdev != unix.Mkdev(1, 3) {
					t.Errorf("device: %v %+v", err, st)
				}
			}},
		{name: "SetuidKeptAsRoot", stream: tars(hdr{tar.Header{Name: "su", Typeflag: tar.TypeReg, Mode: 0o4755}, "#!"}),
			check: func(t *testing.T, layer string, _ archive.Summary) {
				fi, err := os.Lstat(filepath.Join(layer, "su"))
				if err != nil || fi.Mode()&os.ModeSetuid == 0 {
					t.Errorf("setuid bit lost: %v %v", fi, err)
				}
			}},
		{name: "NULInName", stream: func(t *testing.T, _ *sandbox) []byte { return nulName(t, "/../../../x") },
			want: append(inval, tar.ErrHeader)},
		{name: "LongComponent", stream: tars(file(strings.Repeat("n", 300), "x")), want: []error{syscall.ENAMETOOLONG}},
		{name: "LongPath", stream: tars(file(strings.Repeat("d/", 2100)+"f", "x")), want: []error{syscall.ENAMETOOLONG}},
		{name: "HugeDeclaredSize", stream: tars(hdr{tar.Header{Name: "big", Typeflag: tar.TypeReg, Mode: 0o644, Size: 1 << 40}, "only this"}),
			want: []error{io.ErrUnexpectedEOF}},
		{name: "TruncatedGzip", stream: func(t *testing.T, _ *sandbox) []byte { b := gz(t, plain(t)); return b[:len(b)/2] },
			want: []error{io.ErrUnexpectedEOF}},
		{name: "TruncatedZstd", stream: func(t *testing.T, _ *sandbox) []byte { b := zst(t, plain(t)); return b[:len(b)/2] },
			want: []error{io.ErrUnexpectedEOF}},
		{name: "TruncatedGzipTrailer", stream: func(t *testing.T, _ *sandbox) []byte { b := gz(t, plain(t)); return b[:len(b)-4] },
			want: []error{io.ErrUnexpectedEOF}},
		{name: "GarbageAfterGzip", stream: func(t *testing.T, _ *sandbox) []byte {
			return append(gz(t, plain(t)), []byte("garbage after the stream")...)
		}, want: append(inval, gzip.ErrHeader)},
		{name: "GarbageAfterTarIsDrainedAndHashed", opts: []archive.ApplyOption{archive.WithExpectedDiffID(digest.FromBytes(mkTarStatic(file("f", "x"))(nil)))},
			stream: func(t *testing.T, _ *sandbox) []byte { return append(mkTar(t, file("f", "x")), "garbage"...) },
			want:   []error{snapshot.ErrInvalidArgument, archive.ErrDigestMismatch}},
		{name: "WrongDiffID", opts: []archive.ApplyOption{archive.WithExpectedDiffID(digest.FromString("other"))},
			stream: tars(file("f", "x")), want: []error{snapshot.ErrInvalidArgument, archive.ErrDigestMismatch}},
		{name: "WrongDigestGzip", opts: []archive.ApplyOption{archive.WithExpectedDigest(digest.FromString("other"))},
			stream: func(t *testing.T, _ *sandbox) []byte { return gz(t, mkTar(t, file("f", "x"))) },
			want:   []error{snapshot.ErrInvalidArgument, archive.ErrDigestMismatch}},
		{name: "DuplicateFileLastWins", stream: tars(file("f", "one"), file("f", "two")), check: fileIs("f", "two")},
		{name: "FileOverDir", stream: tars(dir("d"), file("d/x", "x"), file("d", "file")), check: fileIs("d", "file")},
		{name: "DirOverFile", stream: tars(file("d", "file"), dir("d"), file("d/x", "x")), check: fileIs("d/x", "x")},
		{name: "WhiteoutOfRoot", stream: tars(file(".wh.", "")), want: inval},
		{name: "WhiteoutOfRootAsDir", stream: tars(dir("/.wh.")), want: inval},
		{name: "WhiteoutOfDotDot", stream: tars(file(".wh...", "")), want: inval},
		{name: "WhiteoutOfWhiteout", stream: tars(file(".wh..wh.f", "")), want: inval},
		{name: "WhiteoutOfOpaqueMarker", stream: tars(file("d/.wh..wh..wh..opq", "")), want: inval},
		{name: "OpaqueMarkerAtRoot", stream: tars(file(".wh..wh..opq", ""), file("f", "x")), check: fileIs("f", "x")},
		{name: "OpaqueMarkerUnderFile", stream: tars(file("f", "x"), file("f/.wh..wh..opq", "")), want: inval},
		{name: "OpaqueMarkerAsDir", stream: tars(dir("d/.wh..wh..opq"), file("d/x", "x")), check: fileIs("d/x", "x")},
		{name: "OpaqueMarkerBetweenSiblings", stream: tars(file("d/a", "a"), file("d/.wh..wh..opq", ""), file("d/b", "b"), file("d/.wh..wh..opq", "")),
			check: func(t *testing.T, layer string, sum archive.Summary) {
				fileIs("d/a", "a")(t, layer, sum)
				fileIs("d/b", "b")(t, layer, sum)
				if sum.OpaqueDirs != 1 {
					t.Errorf("OpaqueDirs = %d", sum.OpaqueDirs)
				}
			}},
		{name: "ForgedOverlayXattrsStripped", stream: tars(withXattrs(file("f", "mine"),
			"trusted.overlay.metacopy", "", "trusted.overlay.redirect", "/etc/shadow", "user.overlay.redirect", "/x", "trusted.overlay.opaque", "y")),
			check: func(t *testing.T, layer string, sum archive.Summary) {
				if sum.StrippedXattrs != 4 {
					t.Errorf("StrippedXattrs = %d, want 4", sum.StrippedXattrs)
				}
				for _, x := range []string{"trusted.overlay.metacopy", "trusted.overlay.redirect", "user.overlay.redirect"} {
					if _, err := unix.Lgetxattr(filepath.Join(layer, "f"), x, nil); !errors.Is(err, unix.ENODATA) {
						t.Errorf("%s on f: %v", x, err)
					}
				}
			}},
		{name: "UnknownType", stream: tars(hdr{tar.Header{Name: "s", Typeflag: 'Z', Mode: 0o644}, ""}), want: inval},
		{name: "RootIsFile", stream: tars(file(".", "x")), want: inval},
		{name: "Empty", stream: func(*testing.T, *sandbox) []byte { return nil }, check: nil},
		{name: "NotATar", stream: func(*testing.T, *sandbox) []byte { return bytes.Repeat([]byte("not a tar "), 100) },
			want: append(inval, tar.ErrHeader)},
	}
}

// mkTarStatic builds a tar lazily, for use in case tables.
func mkTarStatic(hs ...hdr) func(testing.TB) []byte {
	return func(t testing.TB) []byte {
		if t == nil {
			t = &testing.T{}
		}
		return mkTar(t, hs...)
	}
}

// TestHostileLayers imports each hostile layer through the store and
// checks the error (or the documented safe result), that nothing outside
// the store changed, that no snapshot and no staging dir is left behind
// and that the store checks clean after a reopen.
func TestHostileLayers(t *testing.T) {
	testutil.RequireRoot(t) // owners, devices, trusted.* xattrs
	ctx := context.Background()
	for _, c := range hostileCases() {
		t.Run(c.name, func(t *testing.T) {
			sb := newSandbox(t)
			s := sb.open(t)
			stream := c.stream(t, sb)
			info, sum, err := s.ImportTar(ctx, "layer", "", bytes.NewReader(stream), c.opts)
			if c.want != nil {
				if err == nil {
					t.Fatalf("import succeeded (%+v), want %v", info, c.want)
				}
				for _, w := range c.want {
					if !errors.Is(err, w) {
						t.Errorf("err = %v\nwant it to wrap %v", err, w)
					}
				}
				if ks := keys(t, s); len(ks) > 0 {
					t.Errorf("snapshots left behind: %v", ks)
				}
			} else {
				if err != nil {
					t.Fatalf("import: %v", err)
				}
				if c.check != nil {
					c.check(t, layerDir(t, s, "layer"), sum)
				}
			}
			t.Logf("result: %v", err)
			stagingEmpty(t, sb.root)
			if err := s.Check(ctx); err != nil {
				t.Errorf("check: %v", err)
			}
			sb.checkUntouched(t)
		})
	}
}

// TestForgedMetacopyRedirect imports a layer whose file carries a forged
// metacopy + redirect pair pointing at a secret file of the layer below,
// mounts the chain with the kernel (metacopy=on, redirect_dir=on) and
// checks that the file shows its own data, never the secret.
func TestForgedMetacopyRedirect(t *testing.T) {
	testutil.RequireOverlay(t)
	ctx := context.Background()
	for _, ns := range []string{"trusted", "user"} {
		t.Run(ns, func(t *testing.T) {
			sb := newSandbox(t)
			s := sb.open(t)
			secret := "TOP SECRET DATA!"
			if _, _, err := s.ImportTar(ctx, "base", "", bytes.NewReader(mkTar(t,
				hdr{tar.Header{Name: "secret", Typeflag: tar.TypeReg, Mode: 0o600}, secret})), nil); err != nil {
				t.Fatal(err)
			}
			own := strings.Repeat("x", len(secret))
			forged := withXattrs(hdr{tar.Header{Name: "innocent", Typeflag: tar.TypeReg, Mode: 0o644}, own},
				ns+".overlay.metacopy", "", ns+".overlay.redirect", "/secret")
			forgedDir := withXattrs(dir("d"), ns+".overlay.redirect", "/", ns+".overlay.opaque", "n")
			_, sum, err := s.ImportTar(ctx, "top", "base", bytes.NewReader(mkTar(t, forged, forgedDir)), nil)
			if err != nil {
				t.Fatal(err)
			}
			if sum.StrippedXattrs != 4 {
				t.Errorf("StrippedXattrs = %d, want 4", sum.StrippedXattrs)
			}
			ms, err := s.View(ctx, "v", "top")
			if err != nil {
				t.Fatal(err)
			}
			defer s.Remove(ctx, "v")
			target := t.TempDir()
			mount(t, ms, target)
			b, err := os.ReadFile(filepath.Join(target, "innocent"))
			if err != nil {
				t.Fatal(err)
			}
			if string(b) != own {
				t.Fatalf("innocent reads %q: the forged redirect exposed another file's data", b)
			}
			ents, err := os.ReadDir(filepath.Join(target, "d"))
			if err != nil || len(ents) != 0 {
				t.Errorf("d lists %v (%v): the forged dir redirect merged another dir", ents, err)
			}
		})
	}
}

// mount mounts ms (one mount) at target and unmounts in t.Cleanup.
func mount(t *testing.T, ms []snapshot.Mount, target string) {
	t.Helper()
	if len(ms) != 1 {
		t.Fatalf("mounts %+v", ms)
	}
	m := ms[0]
	var flags uintptr
	var data []string
	for _, o := range m.Options {
		switch o {
		case "ro":
			flags |= unix.MS_RDONLY
		case "rbind":
			flags |= unix.MS_BIND | unix.MS_REC
		case "rw":
		default:
			data = append(data, o)
		}
	}
	if m.Type == "bind" {
		flags &^= unix.MS_RDONLY
	}
	if err := unix.Mount(m.Source, target, m.Type, flags, strings.Join(data, ",")); err != nil {
		t.Fatalf("mount %+v: %v", m, err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(target, unix.MNT_DETACH); err != nil {
			t.Errorf("unmount %s: %v", target, err)
		}
	})
}

// TestMillionEntries imports layers of a million tiny entries (files,
// then whiteouts) and checks that the heap stays bounded (the tar is
// streamed, never held). Under STRATA_STRESS=1 only.
func TestMillionEntries(t *testing.T) {
	if !stress() {
		t.Skip("set STRATA_STRESS=1")
	}
	testutil.RequireRoot(t)
	for _, kind := range []string{"files", "whiteouts"} {
		t.Run(kind, func(t *testing.T) { millionEntries(t, kind) })
	}
}

func millionEntries(t *testing.T, kind string) {
	const n = 1_000_000
	pr, pw := io.Pipe()
	go func() {
		tw := tar.NewWriter(pw)
		for i := range n {
			d := i / 1000
			var err error
			switch {
			case i%1000 == 0:
				err = tw.WriteHeader(&tar.Header{Name: dirName(d), Typeflag: tar.TypeDir, Mode: 0o755})
			case kind == "whiteouts":
				err = tw.WriteHeader(&tar.Header{Name: dirName(d) + "/.wh." + dirName(i), Typeflag: tar.TypeReg, Mode: 0o644})
			default:
				err = tw.WriteHeader(&tar.Header{Name: dirName(d) + "/" + dirName(i), Typeflag: tar.TypeReg, Mode: 0o644})
			}
			if err != nil {
				pw.CloseWithError(err)
				return
			}
		}
		pw.CloseWithError(tw.Close())
	}()
	sb := newSandbox(t)
	s := sb.open(t)
	runtime.GC()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)
	peak := make(chan uint64)
	stop := make(chan struct{})
	go func() {
		var m runtime.MemStats
		var max uint64
		for {
			select {
			case <-stop:
				peak <- max
				return
			default:
			}
			runtime.ReadMemStats(&m)
			max = maxu(max, m.HeapAlloc)
			sleepMs(50)
		}
	}()
	_, sum, err := s.ImportTar(context.Background(), "big", "", pr, nil)
	close(stop)
	p := <-peak
	if err != nil {
		t.Fatal(err)
	}
	growth := int64(p) - int64(before.HeapAlloc)
	t.Logf("%d entries (%s); heap before %d MiB, peak %d MiB, growth %d MiB", sum.Entries, kind, before.HeapAlloc>>20, p>>20, growth>>20)
	// 256 MiB is far above what streaming needs and far below holding a
	// million entries' headers.
	if growth > 256<<20 {
		t.Errorf("heap grew by %d MiB for %d entries", growth>>20, n)
	}
}
