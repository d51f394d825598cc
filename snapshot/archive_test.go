package snapshot

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/stratafs/strata/internal/testutil"
	"github.com/stratafs/strata/snapshot/archive"
)

type tarEntry struct {
	name, body string
	typ        byte
}

func makeTar(t *testing.T, entries ...tarEntry) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		h := &tar.Header{Name: e.name, Typeflag: e.typ, Mode: 0o644, Size: int64(len(e.body)), Format: tar.FormatPAX}
		if e.typ == tar.TypeDir {
			h.Mode, h.Size = 0o755, 0
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if _, err := io.WriteString(tw, e.body); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func tarNames(t *testing.T, b []byte) []string {
	t.Helper()
	var names []string
	tr := tar.NewReader(bytes.NewReader(b))
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return names
		}
		if err != nil {
			t.Fatal(err)
		}
		names = append(names, h.Name)
	}
}

// TestImportTarAndDiff imports two OCI layers (the second deletes a file
// of the first and replaces a dir opaquely), checks the union through a
// kernel mount of a view, and exports the second layer back.
func TestImportTarAndDiff(t *testing.T) {
	s := newTestStore(t)
	ctx := context.Background()
	l1 := makeTar(t,
		tarEntry{name: "etc/", typ: tar.TypeDir},
		tarEntry{name: "etc/os-release", body: "strata\n", typ: tar.TypeReg},
		tarEntry{name: "gone", body: "x", typ: tar.TypeReg},
		tarEntry{name: "d/", typ: tar.TypeDir},
		tarEntry{name: "d/old", body: "old", typ: tar.TypeReg},
	)
	l2 := makeTar(t,
		tarEntry{name: ".wh.gone", typ: tar.TypeReg},
		tarEntry{name: "d/", typ: tar.TypeDir},
		tarEntry{name: "d/.wh..wh..opq", typ: tar.TypeReg},
		tarEntry{name: "d/new", body: "new", typ: tar.TypeReg},
	)
	info, sum, err := s.ImportTar(ctx, "l1", "", bytes.NewReader(l1),
		[]archive.ApplyOption{archive.WithExpectedDiffID(digest.FromBytes(l1))})
	if err != nil {
		t.Fatal(err)
	}
	if info.Kind != KindCommitted || sum.DiffID != digest.FromBytes(l1) || sum.Entries != 5 {
		t.Fatalf("import l1: %+v %+v", info, sum)
	}
	if _, _, err := s.ImportTar(ctx, "l2", "l1", bytes.NewReader(l2), nil); err != nil {
		t.Fatal(err)
	}
	if u, err := s.Usage(ctx, "l2"); err != nil || u.Inodes < 3 {
		t.Fatalf("usage of l2: %+v, %v", u, err)
	}

	var out bytes.Buffer
	dsum, err := s.Diff(ctx, &out, "l2")
	if err != nil {
		t.Fatal(err)
	}
	names := tarNames(t, out.Bytes())
	for _, want := range []string{".wh.gone", "d/", "d/.wh..wh..opq", "d/new"} {
		if !slices.Contains(names, want) {
			t.Errorf("diff of l2 lacks %q: %v", want, names)
		}
	}
	if dsum.Whiteouts != 1 || dsum.OpaqueDirs != 1 {
		t.Errorf("diff summary %+v", dsum)
	}
	if _, err := s.View(ctx, "v", "l2"); err != nil {
		t.Fatal(err)
	}
	_, err = s.Diff(ctx, io.Discard, "v")
	wantErr(t, "diff of a view", err, ErrFailedPrecondition)

	if os.Geteuid() != 0 {
		return
	}
	testutil.RequireOverlay(t)
	ms, err := s.Mounts(ctx, "v")
	if err != nil {
		t.Fatal(err)
	}
	mnt := t.TempDir()
	mountAll(t, ms, mnt)
	got := map[string]bool{}
	for _, p := range []string{"etc/os-release", "gone", "d/old", "d/new"} {
		_, err := os.Stat(filepath.Join(mnt, p))
		got[p] = err == nil
	}
	if want := map[string]bool{"etc/os-release": true, "gone": false, "d/old": false, "d/new": true}; !mapsEqual(got, want) {
		t.Fatalf("union of l1+l2: %v, want %v", got, want)
	}
}

func mapsEqual(a, b map[string]bool) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if bv, ok := b[k]; !ok || bv != v {
			return false
		}
	}
	return true
}

// TestImportTarRejectsBadStreams: a wrong diff ID and a path escape both
// fail as invalid arguments and leave nothing in the store (the Check run
// after the test proves no dir is left either).
func TestImportTarRejectsBadStreams(t *testing.T) {
	s := newTestStore(t)
	ctx := context.Background()
	good := makeTar(t, tarEntry{name: "f", body: "data", typ: tar.TypeReg})
	_, _, err := s.ImportTar(ctx, "l", "", bytes.NewReader(good),
		[]archive.ApplyOption{archive.WithExpectedDiffID(digest.FromString("something else"))})
	wantErr(t, "wrong diff ID", err, ErrInvalidArgument)
	wantErr(t, "wrong diff ID", err, archive.ErrDigestMismatch)

	evil := makeTar(t, tarEntry{name: "../../escape", body: "x", typ: tar.TypeReg})
	_, _, err = s.ImportTar(ctx, "l", "", bytes.NewReader(evil), nil)
	wantErr(t, "path escape", err, ErrInvalidArgument)
	wantErr(t, "path escape", err, archive.ErrUnsafePath)

	n := 0
	if err := s.Walk(ctx, func(context.Context, Info) error { n++; return nil }); err != nil {
		t.Fatal(err)
	}
	if n != 0 {
		t.Fatalf("%d snapshots left after rejected imports", n)
	}
}
