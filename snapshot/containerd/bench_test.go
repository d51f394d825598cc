package containerd

import (
	"archive/tar"
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/core/content"
	ctrddiff "github.com/containerd/containerd/v2/core/diff"
	ctrdapply "github.com/containerd/containerd/v2/core/diff/apply"
	"github.com/containerd/containerd/v2/core/mount"
	"github.com/containerd/containerd/v2/core/snapshots"
	ctrdarchive "github.com/containerd/containerd/v2/pkg/archive"
	ctrdcompression "github.com/containerd/containerd/v2/pkg/archive/compression"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	ctrdlocal "github.com/containerd/containerd/v2/plugins/content/local"
	ctrdoverlay "github.com/containerd/containerd/v2/plugins/snapshots/overlay"
	kgzip "github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/stratafs/strata/internal/testutil"
	"github.com/stratafs/strata/snapshot"
	strataarchive "github.com/stratafs/strata/snapshot/archive"
)

// The benchmarks in this file compare strata with containerd's overlayfs
// snapshotter (and, for layers, containerd's own unpack and diff code) in
// the same run: each operation runs for impl=strata and right after for
// impl=containerd. They need root. To get the comparison table, run the
// test binary a few times (each run alternates the two sides) and let
// benchstat put the columns side by side:
//
//	go test -c -o /tmp/ctrbench.test ./snapshot/containerd/ &&
//	(cd snapshot/containerd && for i in 1 2 3; do
//		/tmp/ctrbench.test -test.run '^$' -test.bench . -test.benchtime 1s
//	done) | tee /tmp/ctrbench.txt &&
//	benchstat -col '/impl@(containerd strata)' /tmp/ctrbench.txt
//
// (benchstat: go install golang.org/x/perf/cmd/benchstat@latest). A run
// takes about 5 minutes: the fixtures (a 100-layer chain, a 50,000-file
// upper, a 100 MB layer in gzip and zstd) are generated once per run, in
// temp dirs. The import and diff benchmarks do one or a few iterations
// per run at -benchtime 1s; run more times for tighter medians.

// chainDepth is the length of the committed chain the benchmarks work on.
const chainDepth = 100

// BenchmarkSnapshotter times Prepare, Commit, Remove and View+Mounts on
// top of a 100-layer chain. Both chains are built first; then each
// operation runs for strata and right after for containerd, so that the
// pairs see the same machine state. Only the named operation is timed;
// the setup of each iteration (the Prepare before a Commit, the Remove
// after a Prepare, …) is not.
func BenchmarkSnapshotter(b *testing.B) {
	testutil.RequireRoot(b)
	ctx := namespaces.WithNamespace(context.Background(), "bench")
	type side struct {
		sn  snapshots.Snapshotter
		top string
	}
	var sides []side
	for _, impl := range impls {
		sn, err := impl.open(filepath.Join(b.TempDir(), "root"))
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { sn.Close() })
		sides = append(sides, side{sn, buildChain(ctx, b, sn, chainDepth)})
	}
	seq := 0
	next := func() string { seq++; return fmt.Sprintf("k%d", seq) }
	// prepared makes, untimed, an active snapshot on top with one file
	// written, and returns its key.
	prepared := func(b *testing.B, sn snapshots.Snapshotter, top string) string {
		b.StopTimer()
		defer b.StartTimer()
		k := next()
		m, err := sn.Prepare(ctx, k, top)
		if err != nil {
			b.Fatal(err)
		}
		writeUpper(b, m, "f", "data")
		return k
	}
	ops := []struct {
		name string
		run  func(b *testing.B, sn snapshots.Snapshotter, top string)
	}{
		{"Prepare", func(b *testing.B, sn snapshots.Snapshotter, top string) {
			for b.Loop() {
				k := next()
				if _, err := sn.Prepare(ctx, k, top); err != nil {
					b.Fatal(err)
				}
				b.StopTimer()
				if err := sn.Remove(ctx, k); err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
			}
		}},
		{"Commit", func(b *testing.B, sn snapshots.Snapshotter, top string) {
			for b.Loop() {
				k := prepared(b, sn, top)
				if err := sn.Commit(ctx, k+"-c", k); err != nil {
					b.Fatal(err)
				}
				b.StopTimer()
				if err := sn.Remove(ctx, k+"-c"); err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
			}
		}},
		{"Remove", func(b *testing.B, sn snapshots.Snapshotter, top string) {
			for b.Loop() {
				k := prepared(b, sn, top)
				if err := sn.Remove(ctx, k); err != nil {
					b.Fatal(err)
				}
			}
		}},
		{"ViewMounts", func(b *testing.B, sn snapshots.Snapshotter, top string) {
			for b.Loop() {
				k := next()
				if _, err := sn.View(ctx, k, top); err != nil {
					b.Fatal(err)
				}
				if _, err := sn.Mounts(ctx, k); err != nil {
					b.Fatal(err)
				}
				b.StopTimer()
				if err := sn.Remove(ctx, k); err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
			}
		}},
	}
	for _, op := range ops {
		b.Run(op.name, func(b *testing.B) {
			for i, impl := range impls {
				b.Run("impl="+impl.name, func(b *testing.B) {
					b.ReportAllocs()
					op.run(b, sides[i].sn, sides[i].top)
				})
			}
		})
	}
}

// impls are the two snapshotters compared, strata first.
var impls = []struct {
	name string
	open func(root string) (snapshots.Snapshotter, error)
}{
	{"strata", func(root string) (snapshots.Snapshotter, error) { return Open(root) }},
	{"containerd", func(root string) (snapshots.Snapshotter, error) { return ctrdoverlay.NewSnapshotter(root) }},
}

// buildChain commits depth layers, each with one file, and returns the
// name of the top one.
func buildChain(ctx context.Context, b *testing.B, sn snapshots.Snapshotter, depth int) string {
	b.Helper()
	parent := ""
	for i := range depth {
		key := fmt.Sprintf("layer-%d-active", i)
		m, err := sn.Prepare(ctx, key, parent)
		if err != nil {
			b.Fatal(err)
		}
		writeUpper(b, m, fmt.Sprintf("file-%d", i), "layer")
		name := fmt.Sprintf("layer-%d", i)
		if err := sn.Commit(ctx, name, key); err != nil {
			b.Fatal(err)
		}
		parent = name
	}
	return parent
}

// writeUpper writes a file straight into the writable layer of an active
// snapshot's mounts (the bind source, or the overlay upperdir).
func writeUpper(b *testing.B, ms []mount.Mount, name, data string) {
	b.Helper()
	dir := ""
	for _, m := range ms {
		switch m.Type {
		case "bind":
			dir = m.Source
		case "overlay":
			for _, o := range m.Options {
				if v, ok := strings.CutPrefix(o, "upperdir="); ok {
					dir = v
				}
			}
		}
	}
	if dir == "" {
		b.Fatalf("no writable layer in %+v", ms)
	}
	if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o644); err != nil {
		b.Fatal(err)
	}
}

// BenchmarkUsage times Usage of an active snapshot holding 100 dirs of 50
// small files each (strata walks dirs in parallel; containerd walks
// sequentially).
func BenchmarkUsage(b *testing.B) {
	testutil.RequireRoot(b)
	for _, impl := range impls {
		b.Run("impl="+impl.name, func(b *testing.B) {
			ctx := namespaces.WithNamespace(context.Background(), "bench")
			sn, err := impl.open(filepath.Join(b.TempDir(), "root"))
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { sn.Close() })
			m, err := sn.Prepare(ctx, "a", "")
			if err != nil {
				b.Fatal(err)
			}
			for d := range 100 {
				for f := range 50 {
					writeUpper(b, m, fmt.Sprintf("d%d-f%d", d, f), "x")
				}
			}
			// Move the files into their dirs (writeUpper writes at the top).
			upper := m[0].Source
			for d := range 100 {
				dir := filepath.Join(upper, fmt.Sprintf("d%d", d))
				if err := os.Mkdir(dir, 0o755); err != nil {
					b.Fatal(err)
				}
				for f := range 50 {
					n := fmt.Sprintf("d%d-f%d", d, f)
					if err := os.Rename(filepath.Join(upper, n), filepath.Join(dir, n)); err != nil {
						b.Fatal(err)
					}
				}
			}
			var u snapshots.Usage
			for b.Loop() {
				if u, err = sn.Usage(ctx, "a"); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(u.Inodes), "inodes")
		})
	}
}

// upperOf returns the writable dir of an active snapshot's mounts (the
// bind source, or the overlay upperdir).
func upperOf(b *testing.B, ms []mount.Mount) string {
	b.Helper()
	for _, m := range ms {
		switch m.Type {
		case "bind":
			return m.Source
		case "overlay":
			for _, o := range m.Options {
				if v, ok := strings.CutPrefix(o, "upperdir="); ok {
					return v
				}
			}
		}
	}
	b.Fatalf("no writable layer in %+v", ms)
	return ""
}

// Sizes of the large Usage tree: usageDirs dirs (usageDirs/10 top dirs of
// 10 subdirs each) of usageFiles/usageDirs files.
const (
	usageFiles = 50000
	usageDirs  = 500
	usageLinks = 50 // every usageLinks-th file is a hard link to the one before
)

// writeUsageTree writes the same 50k-entry tree under dir for every seed:
// small files of 0-4 KiB written in full (no holes), every 50th name a hard
// link to the file before it in the same dir.
func writeUsageTree(b *testing.B, dir string) {
	b.Helper()
	rng := rand.New(rand.NewPCG(50, 1000))
	buf := bytes.Repeat([]byte("usage-data-"), 4096/11+1)
	per := usageFiles / usageDirs
	for d := range usageDirs {
		sub := filepath.Join(dir, fmt.Sprintf("t%02d", d/10), fmt.Sprintf("s%d", d%10))
		if err := os.MkdirAll(sub, 0o755); err != nil {
			b.Fatal(err)
		}
		prev := ""
		for f := range per {
			p := filepath.Join(sub, fmt.Sprintf("f%03d", f))
			if f%usageLinks == usageLinks-1 && prev != "" {
				if err := os.Link(prev, p); err != nil {
					b.Fatal(err)
				}
				continue
			}
			if err := os.WriteFile(p, buf[:rng.IntN(4097)], 0o644); err != nil {
				b.Fatal(err)
			}
			prev = p
		}
	}
}

// BenchmarkUsageLarge times Usage of an active snapshot whose upper dir
// holds 50,000 names (49,000 inodes: 1 in 50 is a hard link) in 550 dirs.
// The tree is written once per run into both uppers. containerd's
// overlayfs snapshotter walks the upper with continuity's fs.DiskUsage.
func BenchmarkUsageLarge(b *testing.B) {
	testutil.RequireRoot(b)
	ctx := namespaces.WithNamespace(context.Background(), "bench")
	sns := make([]snapshots.Snapshotter, len(impls))
	for i, impl := range impls {
		sn, err := impl.open(filepath.Join(b.TempDir(), "root"))
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { sn.Close() })
		m, err := sn.Prepare(ctx, "big", "")
		if err != nil {
			b.Fatal(err)
		}
		writeUsageTree(b, upperOf(b, m))
		sns[i] = sn
	}
	var want snapshots.Usage
	for i, impl := range impls {
		b.Run("impl="+impl.name, func(b *testing.B) {
			b.ReportAllocs()
			var u snapshots.Usage
			var err error
			for b.Loop() {
				if u, err = sns[i].Usage(ctx, "big"); err != nil {
					b.Fatal(err)
				}
			}
			if i == 0 {
				want = u
			} else if u.Inodes != want.Inodes || u.Size != want.Size {
				b.Errorf("usage %+v, strata said %+v", u, want)
			}
			b.ReportMetric(float64(u.Inodes), "inodes")
		})
	}
}

// Sizes of the generated layer: layerFiles regular files (layerBig of
// them 1 MiB, the rest 0-8 KiB, 1 in 100 a hard link), plus symlinks and
// 440 dirs; about 100 MB of file data.
const (
	layerFiles = 20000
	layerBig   = 20
)

// genLayer writes a deterministic OCI layer tar (seed picks the bytes) of
// nfiles regular files to w and returns its diff ID. Content is half
// random, half text, so that it compresses like real binaries.
func genLayer(w io.Writer, seed uint64, nfiles int, big int) (digest.Digest, error) {
	rng := rand.New(rand.NewPCG(seed, 7))
	dg := digest.Canonical.Digester()
	bw := bufio.NewWriterSize(io.MultiWriter(w, dg.Hash()), 1<<20)
	tw := tar.NewWriter(bw)
	mtime := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	text := []byte("the quick brown fox jumps over the lazy dog; lorem ipsum dolor sit")
	content := func(n int) []byte {
		p := make([]byte, n)
		for i := 0; i < n; i += 64 {
			end := min(i+64, n)
			if rng.IntN(2) == 0 {
				for j := i; j < end; j += 8 {
					v := rng.Uint64()
					for k := j; k < min(j+8, end); k++ {
						p[k] = byte(v)
						v >>= 8
					}
				}
			} else {
				copy(p[i:end], text)
			}
		}
		return p
	}
	const tops, subs = 40, 10
	for t := range tops {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: fmt.Sprintf("t%02d/", t), Mode: 0o755, ModTime: mtime}); err != nil {
			return "", err
		}
		for s := range subs {
			if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: fmt.Sprintf("t%02d/s%d/", t, s), Mode: 0o755, ModTime: mtime}); err != nil {
				return "", err
			}
		}
	}
	per := nfiles / (tops * subs)
	prev := ""
	for i := range nfiles {
		d := i / per
		name := fmt.Sprintf("t%02d/s%d/f%05d", d/subs, d%subs, i)
		switch {
		case i%100 == 99 && prev != "":
			if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeLink, Name: name, Linkname: prev, Mode: 0o644, ModTime: mtime}); err != nil {
				return "", err
			}
			continue
		case i%50 == 25:
			if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeSymlink, Name: name + ".lnk", Linkname: fmt.Sprintf("f%05d", i), Mode: 0o777, ModTime: mtime}); err != nil {
				return "", err
			}
		}
		size := rng.IntN(8 << 10)
		if big > 0 && i%(nfiles/big) == nfiles/big/2 {
			size = 1 << 20
		}
		mode := int64(0o644)
		if i%7 == 0 {
			mode = 0o755
		}
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Size: int64(size), Mode: mode, ModTime: mtime}); err != nil {
			return "", err
		}
		if _, err := tw.Write(content(size)); err != nil {
			return "", err
		}
		prev = name
	}
	if err := tw.Close(); err != nil {
		return "", err
	}
	if err := bw.Flush(); err != nil {
		return "", err
	}
	return dg.Digest(), nil
}

// layerBlob is one generated, compressed layer on disk.
type layerBlob struct {
	path   string
	desc   ocispec.Descriptor // compressed blob
	diffID digest.Digest
	size   int64 // uncompressed tar bytes
}

// writeLayer generates the layer (seed, nfiles, big) into dir, compressed
// with c (gzip or zstd), and returns it.
func writeLayer(b *testing.B, dir string, seed uint64, nfiles, big int, c ctrdcompression.Compression) layerBlob {
	b.Helper()
	name := fmt.Sprintf("layer-%d-%s.tar", seed, c.Extension())
	f, err := os.Create(filepath.Join(dir, name))
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	dg := digest.Canonical.Digester()
	cnt := &countWriter{}
	bw := bufio.NewWriterSize(io.MultiWriter(f, dg.Hash(), cnt), 1<<20)
	var zw io.WriteCloser
	mt := ocispec.MediaTypeImageLayerGzip
	switch c {
	case ctrdcompression.Gzip:
		zw, err = kgzip.NewWriterLevel(bw, kgzip.DefaultCompression)
	case ctrdcompression.Zstd:
		mt = ocispec.MediaTypeImageLayerZstd
		zw, err = zstd.NewWriter(bw, zstd.WithEncoderLevel(zstd.SpeedDefault))
	default:
		b.Fatalf("compression %v", c)
	}
	if err != nil {
		b.Fatal(err)
	}
	ucnt := &countWriter{}
	diffID, err := genLayer(io.MultiWriter(zw, ucnt), seed, nfiles, big)
	if err != nil {
		b.Fatal(err)
	}
	for _, fn := range []func() error{zw.Close, bw.Flush, f.Sync} {
		if err := fn(); err != nil {
			b.Fatal(err)
		}
	}
	return layerBlob{
		path:   f.Name(),
		desc:   ocispec.Descriptor{MediaType: mt, Digest: dg.Digest(), Size: cnt.n},
		diffID: diffID,
		size:   ucnt.n,
	}
}

type countWriter struct{ n int64 }

func (c *countWriter) Write(p []byte) (int, error) { c.n += int64(len(p)); return len(p), nil }

// importer unpacks a layer blob as a committed snapshot, the way each
// side really does it.
type importer interface {
	importLayer(ctx context.Context, name, parent string, l layerBlob) error
	sn() snapshots.Snapshotter
}

// strataImporter goes through Store.ImportTar of the store under the
// adapter: Prepare, archive.Apply straight into the upper dir (gzip or
// zstd detected, digest and diff ID computed while reading, diff ID
// checked), syncfs, Commit.
type strataImporter struct {
	st *snapshot.Store
	s  snapshots.Snapshotter
}

func (i strataImporter) sn() snapshots.Snapshotter { return i.s }

func (i strataImporter) importLayer(ctx context.Context, name, parent string, l layerBlob) error {
	f, err := os.Open(l.path)
	if err != nil {
		return err
	}
	defer f.Close()
	_, _, err = i.st.ImportTar(ctx, name, parent, f, []strataarchive.ApplyOption{strataarchive.WithExpectedDiffID(l.diffID)})
	return err
}

// ctrdImporter does what containerd's unpacker does for one layer on the
// overlayfs snapshotter: Prepare, then the filesystem applier of
// core/diff/apply reading the blob from a local content store
// (decompressed by pkg/archive/compression.DecompressStream through the
// stream processor chain; gzip in Go, as no unpigz is installed), diff ID
// computed while reading and compared to the expected one, pkg/archive.Apply
// into the upper dir (through a temporary bind mount for a base layer, as
// containerd does), syncfs (WithSyncFs, to match strata's durability),
// then Commit (which walks the upper for its usage).
type ctrdImporter struct {
	s  snapshots.Snapshotter
	cs content.Store
}

func (i ctrdImporter) sn() snapshots.Snapshotter { return i.s }

func (i ctrdImporter) importLayer(ctx context.Context, name, parent string, l layerBlob) error {
	key := "extract-" + name
	ms, err := i.s.Prepare(ctx, key, parent)
	if err != nil {
		return err
	}
	desc, err := ctrdapply.NewFileSystemApplier(i.cs).Apply(ctx, l.desc, ms, ctrddiff.WithSyncFs(true))
	if err == nil && desc.Digest != l.diffID {
		err = fmt.Errorf("diff ID %s, expected %s", desc.Digest, l.diffID)
	}
	if err != nil {
		i.s.Remove(ctx, key)
		return err
	}
	return i.s.Commit(ctx, name, key)
}

// newImporters opens both sides under dir; containerd's content store
// holds blobs.
func newImporters(ctx context.Context, b *testing.B, dir string, blobs ...layerBlob) []importer {
	b.Helper()
	st, err := snapshot.Open(filepath.Join(dir, "strata"))
	if err != nil {
		b.Fatal(err)
	}
	ssn := New(st)
	b.Cleanup(func() { ssn.Close() })
	csn, err := ctrdoverlay.NewSnapshotter(filepath.Join(dir, "containerd"))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { csn.Close() })
	cs, err := ctrdlocal.NewStore(filepath.Join(dir, "content"))
	if err != nil {
		b.Fatal(err)
	}
	for _, l := range blobs {
		f, err := os.Open(l.path)
		if err != nil {
			b.Fatal(err)
		}
		err = content.WriteBlob(ctx, cs, l.desc.Digest.String(), f, l.desc)
		f.Close()
		if err != nil {
			b.Fatal(err)
		}
	}
	return []importer{strataImporter{st, ssn}, ctrdImporter{csn, cs}}
}

// BenchmarkLayer times, on one generated layer (20,000 files, ~100 MB,
// seed fixed, written once per run), the import of its gzip and zstd
// blobs and the export of its diff, strata and containerd alternating.
//
// Import is the whole unpack of one layer: Prepare + decompress + verify
// the diff ID + extract + syncfs + Commit (see strataImporter and
// ctrdImporter). MB/s is of the uncompressed tar.
//
// Diff exports a committed layer as a tar to io.Discard (its digest
// computed, as both content writers would). strata: Store.Diff, which
// walks only the layer's own dir. containerd: what rootfs.CreateDiff and
// the walking differ (plugins/diff/walking) do for an overlayfs
// snapshot, minus the content store write: View the parent and the layer,
// mount both (mount.WithTempMount, WithReadonlyTempMount) and
// pkg/archive.WriteDiff(lowerRoot, upperRoot), a double walk of the
// merged trees comparing them. "base" is the layer with no parent;
// "onParent" the same layer on top of a parent of 20,000 files (~20 MB),
// as when a container's changes are committed on an image. "gzip" adds
// gzip (default level) to the base diff: klauspost gzip for strata, the
// standard library's via compression.CompressStream for containerd.
func BenchmarkLayer(b *testing.B) {
	testutil.RequireRoot(b)
	ctx := namespaces.WithNamespace(context.Background(), "bench")
	dir := b.TempDir()
	blobs := map[string]layerBlob{
		"gzip": writeLayer(b, dir, 1, layerFiles, layerBig, ctrdcompression.Gzip),
		"zstd": writeLayer(b, dir, 1, layerFiles, layerBig, ctrdcompression.Zstd),
	}
	parent := writeLayer(b, dir, 2, layerFiles, 0, ctrdcompression.Zstd)
	if blobs["gzip"].diffID != blobs["zstd"].diffID {
		b.Fatal("gzip and zstd blobs differ")
	}
	imps := newImporters(ctx, b, dir, blobs["gzip"], blobs["zstd"], parent)

	b.Run("Import", func(b *testing.B) {
		for _, c := range []string{"gzip", "zstd"} {
			l := blobs[c]
			b.Run(c, func(b *testing.B) {
				for i, impl := range impls {
					b.Run("impl="+impl.name, func(b *testing.B) {
						b.ReportAllocs()
						b.SetBytes(l.size)
						n := 0
						for b.Loop() {
							n++
							name := fmt.Sprintf("imp-%s-%d", c, n)
							if err := imps[i].importLayer(ctx, name, "", l); err != nil {
								b.Fatal(err)
							}
							b.StopTimer()
							if err := imps[i].sn().Remove(ctx, name); err != nil {
								b.Fatal(err)
							}
							b.StartTimer()
						}
					})
				}
			})
		}
	})

	l := blobs["zstd"]
	for _, imp := range imps {
		for _, step := range []struct{ name, parent string }{{"L", ""}, {"P", ""}, {"LP", "P"}} {
			src := l
			if step.name == "P" {
				src = parent
			}
			if err := imp.importLayer(ctx, step.name, step.parent, src); err != nil {
				b.Fatal(err)
			}
		}
	}
	// A container's changes on top of the image LP: 100 new files, one
	// file replaced and one deleted in each of 10 dirs.
	for _, imp := range imps {
		m, err := imp.sn().Prepare(ctx, "C", "LP")
		if err != nil {
			b.Fatal(err)
		}
		upper := upperOf(b, m)
		for i := range 100 {
			if err := os.WriteFile(filepath.Join(upper, fmt.Sprintf("new-%03d", i)), []byte("container data"), 0o644); err != nil {
				b.Fatal(err)
			}
		}
		mountAndEdit(ctx, b, m)
	}
	sst := imps[0].(strataImporter).st
	b.Run("Diff", func(b *testing.B) {
		for _, v := range []struct {
			name, key string
			gzip      bool
		}{{"base", "L", false}, {"onParent", "LP", false}, {"gzip", "L", true}, {"container", "C", false}} {
			b.Run(v.name, func(b *testing.B) {
				b.Run("impl=strata", func(b *testing.B) {
					b.ReportAllocs()
					if v.key != "C" {
						b.SetBytes(l.size)
					}
					var opts []strataarchive.DiffOption
					if v.gzip {
						opts = append(opts, strataarchive.WithCompression(strataarchive.Gzip))
					}
					for b.Loop() {
						b.StopTimer()
						warmTree(b, filepath.Join(dir, "strata"))
						b.StartTimer()
						if _, err := sst.Diff(ctx, io.Discard, v.key, opts...); err != nil {
							b.Fatal(err)
						}
					}
				})
				b.Run("impl=containerd", func(b *testing.B) {
					b.ReportAllocs()
					if v.key != "C" {
						b.SetBytes(l.size)
					}
					for b.Loop() {
						b.StopTimer()
						warmTree(b, filepath.Join(dir, "containerd"))
						b.StartTimer()
						if err := ctrdDiff(ctx, imps[1].sn(), v.key, v.gzip); err != nil {
							b.Fatal(err)
						}
					}
				})
			})
		}
	})
}

// ctrdDiff exports the committed snapshot key of sn as containerd does
// (rootfs.CreateDiff + walking differ's Compare), writing to io.Discard
// instead of a content store writer (whose digest it computes).
func ctrdDiff(ctx context.Context, sn snapshots.Snapshotter, key string, gz bool) error {
	info, err := sn.Stat(ctx, key)
	if err != nil {
		return err
	}
	lower, err := sn.View(ctx, key+"-parent-view", info.Parent)
	if err != nil {
		return err
	}
	defer sn.Remove(ctx, key+"-parent-view")
	var upper []mount.Mount
	if info.Kind == snapshots.KindActive {
		upper, err = sn.Mounts(ctx, key)
	} else {
		upper, err = sn.View(ctx, key+"-view", key)
		defer sn.Remove(ctx, key+"-view")
	}
	if err != nil {
		return err
	}
	return mount.WithTempMount(ctx, lower, func(lowerRoot string) error {
		return mount.WithReadonlyTempMount(ctx, upper, func(upperRoot string) error {
			out := digest.Canonical.Digester() // the content writer's digest
			if !gz {
				return ctrdarchive.WriteDiff(ctx, out.Hash(), lowerRoot, upperRoot)
			}
			zw, err := ctrdcompression.CompressStream(out.Hash(), ctrdcompression.Gzip)
			if err != nil {
				return err
			}
			uncompressed := digest.Canonical.Digester()
			if err := ctrdarchive.WriteDiff(ctx, io.MultiWriter(zw, uncompressed.Hash()), lowerRoot, upperRoot); err != nil {
				zw.Close()
				return err
			}
			return zw.Close()
		})
	})
}

// warmTree reads every regular file under dir, so that a diff reads from
// the page cache even if something dropped it (other benchmarks on this
// machine drop caches system-wide).
func warmTree(b *testing.B, dir string) {
	b.Helper()
	buf := make([]byte, 1<<20)
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		f, err := os.Open(p)
		if err != nil {
			return err
		}
		defer f.Close()
		_, err = io.CopyBuffer(io.Discard, struct{ io.Reader }{f}, buf)
		return err
	})
	if err != nil {
		b.Fatal(err)
	}
}

// mountAndEdit mounts the active snapshot ms and, through the mount (so
// that each side writes its own whiteouts and copy-ups), replaces one
// file and deletes another in each of 10 dirs of the layer below.
func mountAndEdit(ctx context.Context, b *testing.B, ms []mount.Mount) {
	b.Helper()
	err := mount.WithTempMount(ctx, ms, func(root string) error {
		for t := range 10 {
			d := filepath.Join(root, fmt.Sprintf("t%02d", t), "s0")
			names, err := os.ReadDir(d)
			if err != nil {
				return err
			}
			if err := os.WriteFile(filepath.Join(d, names[0].Name()), []byte("replaced"), 0o644); err != nil {
				return err
			}
			if err := os.Remove(filepath.Join(d, names[1].Name())); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		b.Fatal(err)
	}
}
