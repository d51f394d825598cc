package reliability

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"os"
	"path"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/stratafs/strata/overlay"
	"github.com/stratafs/strata/snapshot/archive"
)

// Fuzz targets; .ci/fuzz runs each for FUZZTIME. Under plain `go test`
// they run their seed corpus only.

// applyInSandbox applies stream to a layer dir next to sentinel dirs and
// fails t if anything outside the layer changed, whether Apply failed or
// not. It returns Apply's error and the layer dir.
func applyInSandbox(t *testing.T, stream []byte) (string, error) {
	sb := newSandbox(t)
	layer := filepath.Join(sb.dir, "store") // outside() ignores it
	if err := os.Mkdir(layer, 0o755); err != nil {
		t.Fatal(err)
	}
	_, err := archive.Apply(context.Background(), layer, bytes.NewReader(stream), archive.WithDevices(archive.DevicesSkip))
	sb.checkUntouched(t)
	for _, p := range []string{"etc/passwd", "data/secret"} {
		var st unix.Stat_t
		if e := unix.Lstat(filepath.Join(sb.sentinel, p), &st); e != nil || st.Nlink != 1 {
			t.Fatalf("sentinel %s: nlink %d, %v: hard-linked from the layer", p, st.Nlink, e)
		}
	}
	return layer, err
}

func seedTars(f *testing.F) {
	t := &testing.T{}
	seeds := [][]hdr{
		{file("../escaped", "x")},
		{dir("a"), file("a/../../escaped", "x")},
		{file("/etc/passwd", "inside")},
		{symlink("up", "../../../../sentinel/etc"), file("up/passwd", "pwned")},
		{symlink("r", "/"), file("r/tmp/x", "x")},
		{symlink("s", "../sentinel/data"), hardlink("h", "s"), file("h/secret", "pwned")},
		{hardlink("pw", "../sentinel/etc/passwd")},
		{file("d/a", "a"), file("d/.wh..wh..opq", ""), file("d/.wh.b", "")},
		{file(".wh...", "")},
		{withXattrs(file("f", "x"), "trusted.overlay.redirect", "/etc", "trusted.overlay.metacopy", "")},
		{file("f", "one"), file("f", "two"), dir("f"), file("f/g", "x")},
		{hdr{tar.Header{Name: "null", Typeflag: tar.TypeChar, Devmajor: 1, Devminor: 3, Mode: 0o666}, ""}},
	}
	for _, s := range seeds {
		b := mkTar(t, s...)
		f.Add(b)
		f.Add(gz(t, b))
		f.Add(zst(t, b))
	}
	f.Add([]byte{})
	f.Add(bytes.Repeat([]byte{0}, 1024))
}

// FuzzApply feeds arbitrary streams to archive.Apply: it may fail, but it
// never writes outside the layer dir and never panics.
func FuzzApply(f *testing.F) {
	if os.Geteuid() != 0 {
		f.Skip("needs root (owners, trusted.* xattrs)")
	}
	seedTars(f)
	f.Fuzz(func(t *testing.T, stream []byte) {
		applyInSandbox(t, stream)
	})
}

// FuzzEntryName applies a one-file layer named name: either Apply refuses
// it with ErrUnsafePath, ErrInvalidArchive or a name-length error, or the
// file lands at the cleaned name inside the layer, which is what cleaning
// must give: no leading "/", no "..", nothing outside.
func FuzzEntryName(f *testing.F) {
	if os.Geteuid() != 0 {
		f.Skip("needs root")
	}
	for _, n := range []string{"a", "/a", "../a", "a/../../b", "a/./b/", "//a//b", ".", "..", "/", "a/..", ".wh.a",
		".wh..wh..opq", "a/.wh..wh..opq", "...", "a/../..", strings.Repeat("x/", 50) + "y", "a\\..\\b"} {
		f.Add(n)
	}
	f.Fuzz(func(t *testing.T, name string) {
		var buf bytes.Buffer
		tw := tar.NewWriter(&buf)
		if err := tw.WriteHeader(&tar.Header{Name: name, Typeflag: tar.TypeReg, Mode: 0o644, Size: 1, Format: tar.FormatPAX}); err != nil {
			t.Skip("not encodable:", err)
		}
		tw.Write([]byte("x"))
		tw.Close()
		layer, err := applyInSandbox(t, buf.Bytes())
		if err != nil {
			if !errors.Is(err, archive.ErrUnsafePath) && !errors.Is(err, archive.ErrInvalidArchive) &&
				!errors.Is(err, unix.ENAMETOOLONG) && !errors.Is(err, tar.ErrHeader) {
				t.Fatalf("%q: unclassified error %v", name, err)
			}
			return
		}
		clean := path.Clean("/" + name)[1:] // what stays inside the root
		if clean == "" || strings.HasPrefix(path.Base(clean), overlay.OCIWhiteoutPrefix) {
			return // the root, or a marker: no file to look for
		}
		if rel := path.Clean(strings.TrimLeft(name, "/")); rel == ".." || strings.HasPrefix(rel, "../") {
			t.Fatalf("%q escapes the root, yet was accepted", name)
		}
		if b, err := os.ReadFile(filepath.Join(layer, clean)); err != nil || string(b) != "x" {
			t.Fatalf("%q: not at %q inside the layer: %q, %v", name, clean, b, err)
		}
	})
}

// FuzzParseOCIName checks the whiteout name codec's invariants.
func FuzzParseOCIName(f *testing.F) {
	for _, n := range []string{"a", ".wh.a", ".wh.", ".wh..", ".wh...", ".wh..wh..opq", ".wh..wh.a", ".wh.a/b",
		".wh..wh..opq.x", "wh.a", ".wh", ".wh.\x00", ".wh..wh..wh..opq"} {
		f.Add(n)
	}
	f.Fuzz(func(t *testing.T, base string) {
		kind, target, err := overlay.ParseOCIName(base)
		if err != nil {
			if !errors.Is(err, overlay.ErrInvalidPath) {
				t.Fatalf("%q: error %v does not wrap ErrInvalidPath", base, err)
			}
			if !strings.HasPrefix(base, overlay.OCIWhiteoutPrefix) {
				t.Fatalf("%q: a plain name refused", base)
			}
			return
		}
		switch kind {
		case overlay.OCIRegular:
			if strings.HasPrefix(base, overlay.OCIWhiteoutPrefix) || target != base {
				t.Fatalf("%q: regular, target %q", base, target)
			}
		case overlay.OCIOpaque:
			if base != overlay.OCIOpaqueMarker {
				t.Fatalf("%q: taken as the opaque marker", base)
			}
		case overlay.OCIWhiteout:
			if target == "" || target == "." || target == ".." || strings.Contains(target, "/") ||
				strings.HasPrefix(target, overlay.OCIWhiteoutPrefix) || overlay.OCIWhiteoutName(target) != base {
				t.Fatalf("%q: whiteout of %q", base, target)
			}
		default:
			t.Fatalf("%q: kind %d", base, kind)
		}
	})
}
