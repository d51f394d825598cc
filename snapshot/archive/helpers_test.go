package archive

import (
	"archive/tar"
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"

	"github.com/stratafs/strata/internal/fstree"
)

// ent is one entry of a tar stream built by a test.
type ent struct {
	hdr  tar.Header
	body []byte
}

var t0 = time.Date(2024, 5, 6, 7, 8, 9, 123456789, time.UTC)

func base(name string, typ byte, mode int64) ent {
	return ent{hdr: tar.Header{Name: name, Typeflag: typ, Mode: mode, ModTime: t0, Format: tar.FormatPAX}}
}

func tDir(name string, mode int64) ent {
	return base(strings.TrimSuffix(name, "/")+"/", tar.TypeDir, mode)
}

func tFile(name, content string, mode int64) ent {
	e := base(name, tar.TypeReg, mode)
	e.body = []byte(content)
	e.hdr.Size = int64(len(content))
	return e
}

func tSymlink(target, name string) ent {
	e := base(name, tar.TypeSymlink, 0o777)
	e.hdr.Linkname = target
	return e
}

func tLink(target, name string) ent {
	e := base(name, tar.TypeLink, 0)
	e.hdr.Linkname = target
	return e
}

func tFifo(name string, mode int64) ent { return base(name, tar.TypeFifo, mode) }

func tChar(name string, major, minor int64) ent {
	e := base(name, tar.TypeChar, 0o620)
	e.hdr.Devmajor, e.hdr.Devminor = major, minor
	return e
}

func tBlock(name string, major, minor int64) ent {
	e := base(name, tar.TypeBlock, 0o660)
	e.hdr.Devmajor, e.hdr.Devminor = major, minor
	return e
}

func tWhiteout(name string) ent {
	dir, b := filepath.Split(name)
	return tFile(dir+".wh."+b, "", 0o644)
}

func tOpaque(dir string) ent { return tFile(filepath.Join(dir, ".wh..wh..opq"), "", 0o644) }

// with modifies an entry's header.
func with(e ent, f func(h *tar.Header)) ent { f(&e.hdr); return e }

func withXattr(e ent, k, v string) ent {
	return with(e, func(h *tar.Header) {
		if h.PAXRecords == nil {
			h.PAXRecords = map[string]string{}
		}
		h.PAXRecords["SCHILY.xattr."+k] = v
	})
}

func withOwner(e ent, uid, gid int) ent {
	return with(e, func(h *tar.Header) { h.Uid, h.Gid = uid, gid })
}

func withTime(e ent, mt time.Time) ent { return with(e, func(h *tar.Header) { h.ModTime = mt }) }

func mkTar(t testing.TB, ents ...ent) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range ents {
		h := e.hdr
		if err := tw.WriteHeader(&h); err != nil {
			t.Fatalf("tar header %q: %v", h.Name, err)
		}
		if _, err := tw.Write(e.body); err != nil {
			t.Fatalf("tar body %q: %v", h.Name, err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func compress(t testing.TB, c Compression, b []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	switch c {
	case Gzip:
		zw := gzip.NewWriter(&buf)
		if _, err := zw.Write(b); err != nil {
			t.Fatal(err)
		}
		if err := zw.Close(); err != nil {
			t.Fatal(err)
		}
	case Zstd:
		zw, err := zstd.NewWriter(&buf)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := zw.Write(b); err != nil {
			t.Fatal(err)
		}
		if err := zw.Close(); err != nil {
			t.Fatal(err)
		}
	default:
		return b
	}
	return buf.Bytes()
}

// applyNew applies stream to a new layer dir and returns it.
func applyNew(t testing.TB, stream []byte, opts ...ApplyOption) (string, Summary) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "layer")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	s, err := Apply(context.Background(), dir, bytes.NewReader(stream), opts...)
	if err != nil {
		t.Fatalf("Apply: %v", err)
	}
	return dir, s
}

func writeDiff(t testing.TB, layer string, lowers []string, opts ...DiffOption) ([]byte, DiffSummary) {
	t.Helper()
	var buf bytes.Buffer
	s, err := WriteDiff(context.Background(), &buf, layer, lowers, opts...)
	if err != nil {
		t.Fatalf("WriteDiff: %v", err)
	}
	return buf.Bytes(), s
}

func snap(t testing.TB, dir string, opts ...fstree.Option) fstree.Tree {
	t.Helper()
	tr, err := fstree.Snapshot(dir, opts...)
	if err != nil {
		t.Fatal(err)
	}
	return tr
}

func requireSameTree(t testing.TB, want, got fstree.Tree, opts ...fstree.Option) {
	t.Helper()
	if d := fstree.Diff(want, got, opts...); len(d) > 0 {
		t.Fatalf("trees differ:\n  %s", strings.Join(d, "\n  "))
	}
}

// tarNames lists the entry names of a (plain) tar stream.
func tarNames(t testing.TB, b []byte) []string {
	t.Helper()
	tr := tar.NewReader(bytes.NewReader(b))
	var names []string
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return names
		}
		if err != nil {
			t.Fatal(err)
		}
		names = append(names, h.Name)
	}
}
