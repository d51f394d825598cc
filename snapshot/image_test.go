package snapshot

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/stratafs/strata/internal/ocidemo"
	"github.com/stratafs/strata/internal/testutil"
	"github.com/stratafs/strata/snapshot/archive"
)

// independentChainIDs computes the OCI chain IDs of diffIDs with
// crypto/sha256 straight from image-spec config.md, not with ChainID.
func independentChainIDs(diffIDs []digest.Digest) []string {
	var out []string
	for i, d := range diffIDs {
		if i == 0 {
			out = append(out, d.String())
			continue
		}
		sum := sha256.Sum256([]byte(out[i-1] + " " + d.String()))
		out = append(out, "sha256:"+hex.EncodeToString(sum[:]))
	}
	return out
}

func TestChainID(t *testing.T) {
	img, err := ocidemo.Write(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	want := independentChainIDs(img.DiffIDs)
	parent := ""
	for i, d := range img.DiffIDs {
		parent = ChainID(parent, d)
		if parent != want[i] || parent != img.ChainIDs[i].String() {
			t.Fatalf("chain ID %d: got %s, want %s (ocidemo: %s)", i, parent, want[i], img.ChainIDs[i])
		}
	}
}

// recorder is a LayerProgress that records what it was told.
type recorder struct {
	started bool
	size    int64
	read    int64
	done    []ImportedLayer
}

func (r *recorder) Start(size int64)     { r.started, r.size = true, size }
func (r *recorder) Read(n int)           { r.read += int64(n) }
func (r *recorder) Done(l ImportedLayer) { r.done = append(r.done, l) }

// progressRecorder hands out one recorder per layer.
type progressRecorder struct{ layers []*recorder }

func (p *progressRecorder) opt() ImageOpt {
	return WithImageProgress(func(i, n int, _ Descriptor) LayerProgress {
		r := &recorder{}
		p.layers = append(p.layers, r)
		return r
	})
}

// snapshotNames lists the names of all snapshots in s, sorted.
func snapshotNames(t *testing.T, s *Store) []string {
	t.Helper()
	var names []string
	if err := s.Walk(context.Background(), func(_ context.Context, i Info) error {
		names = append(names, i.Name)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	slices.Sort(names)
	return names
}

// TestImportImage imports the demo image by tag, then again without a tag
// (the only manifest): the second import reads no blob and keeps the
// layers.
func TestImportImage(t *testing.T) {
	testutil.RequireRoot(t) // whiteouts are char devices
	s := newTestStore(t)
	ctx := context.Background()
	dir := t.TempDir()
	img, err := ocidemo.Write(dir)
	if err != nil {
		t.Fatal(err)
	}
	want := independentChainIDs(img.DiffIDs)

	var pr progressRecorder
	res, err := s.ImportImage(ctx, dir, ocidemo.Tag, pr.opt())
	if err != nil {
		t.Fatal(err)
	}
	if res.ChainID != want[2] {
		t.Fatalf("top chain ID %s, want %s", res.ChainID, want[2])
	}
	if res.Manifest != img.Manifest || len(res.Layers) != 3 || len(pr.layers) != 3 {
		t.Fatalf("result %+v, %d progress", res, len(pr.layers))
	}
	for i, l := range res.Layers {
		if l.ChainID != want[i] || l.DiffID != img.DiffIDs[i] || l.Digest != img.Layers[i] || l.Existed || l.Entries == 0 {
			t.Fatalf("layer %d: %+v", i, l)
		}
		info, err := s.Stat(ctx, l.ChainID)
		if err != nil {
			t.Fatal(err)
		}
		parent := ""
		if i > 0 {
			parent = want[i-1]
		}
		if info.Kind != KindCommitted || info.Parent != parent ||
			info.Labels[LabelDiffID] != img.DiffIDs[i].String() || info.Labels[LabelDigest] != img.Layers[i].String() {
			t.Fatalf("layer %d: %+v", i, info)
		}
		fi, err := os.Stat(blobPath(dir, img.Layers[i]))
		if err != nil {
			t.Fatal(err)
		}
		r := pr.layers[i]
		if !r.started || r.size != fi.Size() || r.read != fi.Size() || len(r.done) != 1 || r.done[0] != l {
			t.Fatalf("layer %d progress: %+v", i, r)
		}
	}
	// The layers hold what the image says: the top layer is opaque over
	// app/config and holds c.conf only.
	ls, err := s.Layers(ctx, res.ChainID)
	if err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(filepath.Join(ls[0].Dir, "app", "config", "c.conf")); err != nil || string(b) != "c=3\n" {
		t.Fatalf("c.conf: %q, %v", b, err)
	}

	// Again, without a tag: found before reading, kept as they are.
	pr = progressRecorder{}
	res2, err := s.ImportImage(ctx, dir, "", pr.opt())
	if err != nil {
		t.Fatal(err)
	}
	if res2.ChainID != res.ChainID {
		t.Fatalf("re-import: top %s, want %s", res2.ChainID, res.ChainID)
	}
	for i, l := range res2.Layers {
		if !l.Existed || l.ChainID != want[i] || pr.layers[i].started || len(pr.layers[i].done) != 1 {
			t.Fatalf("re-import layer %d: %+v, progress %+v", i, l, pr.layers[i])
		}
	}
	if got := snapshotNames(t, s); !slices.Equal(got, slices.Sorted(slices.Values(want))) {
		t.Fatalf("snapshots %v, want %v", got, want)
	}
}

// TestImportLayer imports the demo layers one by one as plain tar files:
// the chain IDs are those of the image; a layer already present is read,
// then kept; a missing parent or file is refused before anything is
// written.
func TestImportLayer(t *testing.T) {
	testutil.RequireRoot(t)
	s := newTestStore(t)
	ctx := context.Background()
	dir := t.TempDir()
	var diffIDs []digest.Digest
	var files []string
	for i, entries := range ocidemo.Layers {
		raw, err := ocidemo.LayerTar(entries)
		if err != nil {
			t.Fatal(err)
		}
		f := filepath.Join(dir, "l"+string(rune('1'+i))+".tar")
		if err := os.WriteFile(f, raw, 0o644); err != nil {
			t.Fatal(err)
		}
		files = append(files, f)
		diffIDs = append(diffIDs, digest.FromBytes(raw))
	}
	want := independentChainIDs(diffIDs)

	_, err := s.ImportLayer(ctx, files[0], "nope", LayerSpec{}, nil)
	wantErr(t, "missing parent", err, ErrNotFound)
	_, err = s.ImportLayer(ctx, filepath.Join(dir, "missing.tar"), "", LayerSpec{}, nil)
	wantErr(t, "missing file", err, os.ErrNotExist)

	parent := ""
	for i, f := range files {
		l, err := s.ImportLayer(ctx, f, parent, LayerSpec{}, nil)
		if err != nil {
			t.Fatal(err)
		}
		if l.ChainID != want[i] || l.DiffID != diffIDs[i] || l.Digest != diffIDs[i] || l.Existed {
			t.Fatalf("layer %d: %+v", i, l)
		}
		parent = l.ChainID
	}
	// Unknown diff ID: read, then found present at commit, and kept.
	var r recorder
	l, err := s.ImportLayer(ctx, files[1], want[0], LayerSpec{}, &r)
	if err != nil {
		t.Fatal(err)
	}
	if !l.Existed || l.ChainID != want[1] || !r.started || len(r.done) != 1 || !r.done[0].Existed {
		t.Fatalf("re-import: %+v, progress %+v", l, r)
	}
	if got := snapshotNames(t, s); !slices.Equal(got, slices.Sorted(slices.Values(want))) {
		t.Fatalf("snapshots %v, want %v", got, want)
	}
}

// TestImportImageRejects: layouts that are wrong in each way ImportImage
// checks fail with the right class, and a failing layer leaves nothing
// (the layers below it, complete and correct, stay).
func TestImportImageRejects(t *testing.T) {
	testutil.RequireRoot(t)
	ctx := context.Background()
	fresh := func(t *testing.T) (string, ocidemo.Image) {
		dir := t.TempDir()
		img, err := ocidemo.Write(dir)
		if err != nil {
			t.Fatal(err)
		}
		return dir, img
	}

	t.Run("tag not found", func(t *testing.T) {
		s := newTestStore(t)
		dir, _ := fresh(t)
		_, err := s.ImportImage(ctx, dir, "nope")
		wantErr(t, "tag", err, ErrNotFound)
		if err.Error() != `tag "nope": not found` {
			t.Fatalf("message %q", err)
		}
	})

	t.Run("wrong blob digest", func(t *testing.T) {
		s := newTestStore(t)
		dir, img := fresh(t)
		// Another valid gzip tar in layer 2's place: only the digest tells.
		b, err := os.ReadFile(blobPath(dir, img.Layers[2]))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(blobPath(dir, img.Layers[1]), b, 0o644); err != nil {
			t.Fatal(err)
		}
		_, err = s.ImportImage(ctx, dir, ocidemo.Tag)
		wantErr(t, "wrong digest", err, ErrInvalidArgument)
		wantErr(t, "wrong digest", err, archive.ErrDigestMismatch)
		if got := snapshotNames(t, s); !slices.Equal(got, []string{img.ChainIDs[0].String()}) {
			t.Fatalf("snapshots %v after a bad layer 2", got)
		}
	})

	t.Run("diff ID mismatch", func(t *testing.T) {
		s := newTestStore(t)
		dir, img := fresh(t)
		editConfig(t, dir, func(cfg map[string]any) {
			cfg["rootfs"].(map[string]any)["diff_ids"].([]any)[1] = digest.FromString("not layer 2").String()
		})
		_, err := s.ImportImage(ctx, dir, ocidemo.Tag)
		wantErr(t, "diff ID", err, ErrInvalidArgument)
		wantErr(t, "diff ID", err, archive.ErrDigestMismatch)
		if got := snapshotNames(t, s); !slices.Equal(got, []string{img.ChainIDs[0].String()}) {
			t.Fatalf("snapshots %v after a bad layer 2", got)
		}
	})

	t.Run("diff ID count", func(t *testing.T) {
		s := newTestStore(t)
		dir, _ := fresh(t)
		editConfig(t, dir, func(cfg map[string]any) {
			rootfs := cfg["rootfs"].(map[string]any)
			rootfs["diff_ids"] = rootfs["diff_ids"].([]any)[:2]
		})
		_, err := s.ImportImage(ctx, dir, "")
		wantErr(t, "diff ID count", err, ErrInvalidArgument)
	})

	t.Run("corrupt manifest blob", func(t *testing.T) {
		s := newTestStore(t)
		dir, img := fresh(t)
		if err := os.WriteFile(blobPath(dir, img.Manifest), []byte(`{}`), 0o644); err != nil {
			t.Fatal(err)
		}
		_, err := s.ImportImage(ctx, dir, "")
		wantErr(t, "corrupt manifest", err, ErrInvalidArgument)
	})

	t.Run("several manifests", func(t *testing.T) {
		s := newTestStore(t)
		dir, img := fresh(t)
		writeIndex(t, dir, []Descriptor{
			{MediaType: "application/vnd.oci.image.manifest.v1+json", Digest: img.Manifest, Annotations: map[string]string{AnnotationRefName: "a"}},
			{MediaType: "application/vnd.oci.image.manifest.v1+json", Digest: img.Manifest, Annotations: map[string]string{AnnotationRefName: "b"}},
		})
		_, err := s.ImportImage(ctx, dir, "")
		wantErr(t, "no tag", err, ErrInvalidArgument)
		res, err := s.ImportImage(ctx, dir, "b")
		if err != nil || res.ChainID != img.ChainIDs[2].String() {
			t.Fatalf("tag b: %+v, %v", res, err)
		}
	})
}

// TestImportImageNestedIndex: a multi-platform image gives the manifest of
// linux/<arch>, and ErrNotFound for an architecture it lacks.
func TestImportImageNestedIndex(t *testing.T) {
	testutil.RequireRoot(t)
	s := newTestStore(t)
	ctx := context.Background()
	dir := t.TempDir()
	img, err := ocidemo.Write(dir)
	if err != nil {
		t.Fatal(err)
	}
	man := func(arch string) Descriptor {
		return Descriptor{MediaType: "application/vnd.oci.image.manifest.v1+json", Digest: img.Manifest,
			Platform: &Platform{OS: "linux", Architecture: arch}}
	}
	nested, err := json.Marshal(ociIndex{SchemaVersion: 2, MediaType: ociIndexType,
		Manifests: []Descriptor{man("riscv64"), man("arm64")}})
	if err != nil {
		t.Fatal(err)
	}
	nd := digest.FromBytes(nested)
	if err := os.WriteFile(blobPath(dir, nd), nested, 0o644); err != nil {
		t.Fatal(err)
	}
	writeIndex(t, dir, []Descriptor{{MediaType: ociIndexType, Digest: nd, Size: int64(len(nested)),
		Annotations: map[string]string{AnnotationRefName: ocidemo.Tag}}})

	_, err = s.ImportImage(ctx, dir, ocidemo.Tag, WithArchitecture("s390x"))
	wantErr(t, "s390x", err, ErrNotFound)
	res, err := s.ImportImage(ctx, dir, ocidemo.Tag, WithArchitecture("arm64"))
	if err != nil || res.ChainID != img.ChainIDs[2].String() || res.Manifest != img.Manifest {
		t.Fatalf("arm64: %+v, %v", res, err)
	}
}

// writeIndex replaces dir's index.json with one listing manifests.
func writeIndex(t *testing.T, dir string, manifests []Descriptor) {
	t.Helper()
	b, err := json.Marshal(ociIndex{SchemaVersion: 2, MediaType: ociIndexType, Manifests: manifests})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "index.json"), b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// editConfig rewrites the image config of the only manifest in dir with
// edit, and the manifest and index.json to point at the new blobs, so that
// the layout stays valid up to what edit broke.
func editConfig(t *testing.T, dir string, edit func(map[string]any)) {
	t.Helper()
	put := func(v any) Descriptor {
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		d := digest.FromBytes(b)
		if err := os.WriteFile(blobPath(dir, d), b, 0o644); err != nil {
			t.Fatal(err)
		}
		return Descriptor{Digest: d, Size: int64(len(b))}
	}
	get := func(d digest.Digest) map[string]any {
		b, err := os.ReadFile(blobPath(dir, d))
		if err != nil {
			t.Fatal(err)
		}
		var v map[string]any
		if err := json.Unmarshal(b, &v); err != nil {
			t.Fatal(err)
		}
		return v
	}
	var idx ociIndex
	b, err := os.ReadFile(filepath.Join(dir, "index.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &idx); err != nil {
		t.Fatal(err)
	}
	m := get(idx.Manifests[0].Digest)
	mc := m["config"].(map[string]any)
	cfg := get(digest.Digest(mc["digest"].(string)))
	edit(cfg)
	cd := put(cfg)
	mc["digest"], mc["size"] = cd.Digest, cd.Size
	md := put(m)
	idx.Manifests[0].Digest, idx.Manifests[0].Size = md.Digest, md.Size
	writeIndex(t, dir, idx.Manifests)
}
