package snapshot

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strings"

	"github.com/opencontainers/go-digest"

	"github.com/stratafs/strata/snapshot/archive"
)

// This file imports OCI layers and images (image-spec image-layout.md) as
// chains of committed snapshots named by their OCI chain IDs: ImportLayer
// for one layer blob, ImportImage for an image layout directory.

// Labels ImportLayer and ImportImage set on each layer they commit.
const (
	LabelDiffID = "strata.io/diff-id" // sha256 of the uncompressed layer tar
	LabelDigest = "strata.io/digest"  // sha256 of the blob as read (compressed)
)

// ChainID returns the OCI chain ID (image-spec config.md) of the layer
// with diffID on the chain parent ("" for a base layer):
// chainID(L0) = diffID(L0), chainID(L0..n) = sha256(chainID(L0..n-1) + " " +
// diffID(Ln)).
func ChainID(parent string, diffID digest.Digest) string {
	if parent == "" {
		return diffID.String()
	}
	return digest.FromString(parent + " " + diffID.String()).String()
}

// LayerSpec is what the caller knows of a layer before reading it.
type LayerSpec struct {
	Digest digest.Digest // expected blob digest; "" to not check
	DiffID digest.Digest // expected diff ID; "" if unknown
}

// ImportedLayer describes a layer ImportLayer put (or found) in the store.
type ImportedLayer struct {
	ChainID string        // the committed snapshot's name
	DiffID  digest.Digest // digest of the uncompressed tar
	Digest  digest.Digest // digest of the blob as read
	Size    int64         // uncompressed tar bytes read; 0 when Existed before reading
	Entries int           // tar entries applied
	Existed bool          // the chain ID was in the store already: kept as it is
}

// LayerProgress follows the import of one layer; a nil LayerProgress is
// allowed. Calls come from the importing goroutine, in order: Start and
// Read (only if the blob is read at all), then Done on success.
type LayerProgress interface {
	// Start: the blob (size bytes) is about to be read.
	Start(size int64)
	// Read: n more bytes of the blob have been read.
	Read(n int)
	// Done: the layer is in the store. Done without Start means the
	// layer was found present before its blob was read.
	Done(l ImportedLayer)
}

// ImportLayer imports the OCI layer tar (plain, gzip or zstd) at path as a
// committed snapshot on parent ("" for a base layer), named by its chain
// ID and labelled with LabelDiffID and LabelDigest. The chain ID is known
// only once the tar is read (its diff ID), so the layer is unpacked into a
// temporary active snapshot and committed under its chain ID afterwards;
// when spec.DiffID is given and that chain ID is already in the store,
// the blob is not read at all. A layer whose chain ID turns out to be
// present is kept as it is (Existed).
//
// spec.Digest and spec.DiffID, when set, are verified while reading. A
// stream the archive package rejects fails with ErrInvalidArgument as well
// as the archive sentinel; nothing of it stays in the store. A parent
// that does not exist fails with ErrNotFound before anything is read.
func (s *Store) ImportLayer(ctx context.Context, path, parent string, spec LayerSpec, p LayerProgress) (ImportedLayer, error) {
	if p == nil {
		p = nopProgress{}
	}
	if parent != "" {
		if _, err := s.Stat(ctx, parent); errors.Is(err, ErrNotFound) {
			return ImportedLayer{}, fmt.Errorf("parent %q: %w", parent, ErrNotFound)
		} else if err != nil {
			return ImportedLayer{}, err
		}
	}
	return s.importLayerFile(ctx, path, parent, spec, p)
}

func (s *Store) importLayerFile(ctx context.Context, path, parent string, spec LayerSpec, p LayerProgress) (_ ImportedLayer, err error) {
	var res ImportedLayer
	if spec.DiffID != "" {
		res.ChainID = ChainID(parent, spec.DiffID)
		if _, err := s.Stat(ctx, res.ChainID); err == nil {
			res.DiffID, res.Digest, res.Existed = spec.DiffID, spec.Digest, true
			p.Done(res)
			return res, nil
		}
	}
	f, err := os.Open(path)
	if err != nil {
		return res, fmt.Errorf("import %q: %w", path, pathCause(err))
	}
	defer func() { _ = f.Close() }() // read only
	fi, err := f.Stat()
	if err != nil {
		return res, fmt.Errorf("import %q: %w", path, err)
	}
	var rnd [8]byte
	_, _ = rand.Read(rnd[:])
	tmp := "import-" + hex.EncodeToString(rnd[:])
	// importLabel: Open removes the temporary snapshot if a crash leaves it.
	if _, err := s.Prepare(ctx, tmp, parent, WithLabels(map[string]string{importLabel: path})); err != nil {
		return res, err
	}
	defer func() {
		if err != nil {
			if rerr := s.Remove(context.WithoutCancel(ctx), tmp); rerr != nil {
				err = errors.Join(err, rerr)
			}
		}
	}()
	dir, err := s.upperDir(tmp)
	if err != nil {
		return res, err
	}
	aopts := []archive.ApplyOption{archive.WithFormat(s.overlayFormat())}
	if spec.Digest != "" {
		aopts = append(aopts, archive.WithExpectedDigest(spec.Digest))
	}
	if spec.DiffID != "" {
		aopts = append(aopts, archive.WithExpectedDiffID(spec.DiffID))
	}
	p.Start(fi.Size())
	sum, err := archive.Apply(ctx, dir, progressReader{f, p}, aopts...)
	if err != nil {
		return res, fmt.Errorf("import %q: %w", path, invalidStream(err))
	}
	res.DiffID, res.Digest, res.Size, res.Entries = sum.DiffID, sum.Digest, sum.Size, sum.Entries
	res.ChainID = ChainID(parent, sum.DiffID)
	labels := map[string]string{LabelDiffID: sum.DiffID.String(), LabelDigest: sum.Digest.String()}
	// Commit makes the layer durable before it records it (Durability).
	err = s.Commit(ctx, res.ChainID, tmp, WithLabels(labels))
	if errors.Is(err, ErrAlreadyExists) {
		// The same layer on the same parent is there already: keep it.
		res.Existed = true
		if err := s.Remove(ctx, tmp); err != nil {
			return res, err
		}
		p.Done(res)
		return res, nil
	}
	if err != nil {
		return res, err
	}
	p.Done(res)
	return res, nil
}

// invalidStream adds ErrInvalidArgument to the archive errors that blame
// the stream (as classifyArchive does) while keeping err's message.
func invalidStream(err error) error {
	if classifyArchive(err) == err {
		return err
	}
	return classified{err, ErrInvalidArgument}
}

// classified gives err the class kind for errors.Is; its message stays
// err's own.
type classified struct{ err, kind error }

func (e classified) Error() string   { return e.err.Error() }
func (e classified) Unwrap() []error { return []error{e.err, e.kind} }

// pathCause returns the cause inside a *fs.PathError (the errno), for
// messages that already name the path; other errors come back unchanged.
func pathCause(err error) error {
	if pe := (*fs.PathError)(nil); errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

type nopProgress struct{}

func (nopProgress) Start(int64)        {}
func (nopProgress) Read(int)           {}
func (nopProgress) Done(ImportedLayer) {}

var _ LayerProgress = nopProgress{}

// progressReader reports what r delivers to p.
type progressReader struct {
	r io.Reader
	p LayerProgress
}

func (pr progressReader) Read(b []byte) (int, error) {
	n, err := pr.r.Read(b)
	if n > 0 {
		pr.p.Read(n)
	}
	return n, err
}

// Descriptor is an OCI content descriptor (image-spec descriptor.md), the
// fields ImportImage reads.
type Descriptor struct {
	MediaType   string            `json:"mediaType"`
	Digest      digest.Digest     `json:"digest"`
	Size        int64             `json:"size"`
	Annotations map[string]string `json:"annotations,omitempty"`
	Platform    *Platform         `json:"platform,omitempty"`
}

// Platform is the platform of a manifest in an index.
type Platform struct {
	OS           string `json:"os"`
	Architecture string `json:"architecture"`
}

type ociIndex struct {
	SchemaVersion int          `json:"schemaVersion"`
	MediaType     string       `json:"mediaType,omitempty"`
	Manifests     []Descriptor `json:"manifests"`
}

type ociManifest struct {
	SchemaVersion int          `json:"schemaVersion"`
	MediaType     string       `json:"mediaType,omitempty"`
	Config        Descriptor   `json:"config"`
	Layers        []Descriptor `json:"layers"`
}

type ociConfig struct {
	RootFS struct {
		Type    string          `json:"type"`
		DiffIDs []digest.Digest `json:"diff_ids"`
	} `json:"rootfs"`
}

// Media types and annotations ImportImage knows.
const (
	// AnnotationRefName tags a manifest in index.json.
	AnnotationRefName = "org.opencontainers.image.ref.name"
	ociIndexType      = "application/vnd.oci.image.index.v1+json"
	dockerListType    = "application/vnd.docker.distribution.manifest.list.v2+json"
)

// ImageResult describes an imported image.
type ImageResult struct {
	Manifest digest.Digest   // the manifest that was imported
	Layers   []ImportedLayer // bottom first
	ChainID  string          // the top layer's chain ID: prepare containers on it
}

// ImageOpt configures ImportImage.
type ImageOpt func(*imageConfig)

type imageConfig struct {
	progress func(i, n int, layer Descriptor) LayerProgress
	arch     string
}

// WithImageProgress has ImportImage ask f for the progress of layer i
// (0-based) of n before importing it; f may return nil.
func WithImageProgress(f func(i, n int, layer Descriptor) LayerProgress) ImageOpt {
	return func(c *imageConfig) { c.progress = f }
}

// WithArchitecture picks the linux/arch manifest of a multi-platform
// image; the default is runtime.GOARCH.
func WithArchitecture(arch string) ImageOpt { return func(c *imageConfig) { c.arch = arch } }

// ImportImage imports the image in the OCI image layout at dir: it reads
// index.json, picks the manifest tagged tag (annotation
// org.opencontainers.image.ref.name) or, with tag "", the only one; a
// nested index (multi-platform image) gives its only manifest or the one
// for linux/runtime.GOARCH. Then it imports the manifest's layers in order
// with ImportLayer, each blob's digest and each layer's diff ID checked
// against the manifest and the config. Layers already present are kept.
//
// Errors: a tag not in the index, or no manifest, or no manifest for our
// platform: ErrNotFound; several manifests and no tag, a malformed or
// corrupt JSON blob, a config whose diff IDs do not match the layers, a
// layer blob or tar that does not match its digest or diff ID:
// ErrInvalidArgument. Layers imported before a failure stay (they are
// complete, correct layers); the failing one leaves nothing. The messages
// do not repeat dir: the caller names the image.
func (s *Store) ImportImage(ctx context.Context, dir, tag string, opts ...ImageOpt) (ImageResult, error) {
	cfg := imageConfig{arch: runtime.GOARCH}
	for _, o := range opts {
		o(&cfg)
	}
	var res ImageResult
	var idx ociIndex
	b, err := os.ReadFile(filepath.Join(dir, "index.json"))
	if err != nil {
		return res, pathCause(err) // the caller names dir
	}
	if err := json.Unmarshal(b, &idx); err != nil {
		return res, fmt.Errorf("index.json: %w: %w", ErrInvalidArgument, err)
	}
	md, err := pickManifest(dir, idx, tag, cfg.arch)
	if err != nil {
		return res, err
	}
	res.Manifest = md.Digest
	var m ociManifest
	if err := readBlob(dir, md, &m); err != nil {
		return res, err
	}
	var ic ociConfig
	if err := readBlob(dir, m.Config, &ic); err != nil {
		return res, err
	}
	if len(ic.RootFS.DiffIDs) != len(m.Layers) {
		return res, fmt.Errorf("config lists %d diff IDs for %d layers: %w", len(ic.RootFS.DiffIDs), len(m.Layers), ErrInvalidArgument)
	}
	for i, l := range m.Layers {
		if err := l.Digest.Validate(); err != nil {
			return res, fmt.Errorf("layer %d: digest %q: %w", i+1, l.Digest, ErrInvalidArgument)
		}
		var p LayerProgress
		if cfg.progress != nil {
			p = cfg.progress(i, len(m.Layers), l)
		}
		if p == nil {
			p = nopProgress{}
		}
		spec := LayerSpec{Digest: l.Digest, DiffID: ic.RootFS.DiffIDs[i]}
		il, err := s.importLayerFile(ctx, blobPath(dir, l.Digest), res.ChainID, spec, p)
		if err != nil {
			return res, err
		}
		res.Layers = append(res.Layers, il)
		res.ChainID = il.ChainID
	}
	return res, nil
}

// readBlob reads and verifies a small JSON blob of the layout into v.
func readBlob(dir string, d Descriptor, v any) error {
	if err := d.Digest.Validate(); err != nil {
		return fmt.Errorf("descriptor %q: %w", d.Digest, ErrInvalidArgument)
	}
	b, err := os.ReadFile(blobPath(dir, d.Digest))
	if err != nil {
		return fmt.Errorf("blob %s: %w", d.Digest, err)
	}
	if got := d.Digest.Algorithm().FromBytes(b); got != d.Digest {
		return fmt.Errorf("blob %s: content has digest %s: %w", d.Digest, got, ErrInvalidArgument)
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("blob %s: %w: %w", d.Digest, ErrInvalidArgument, err)
	}
	return nil
}

func blobPath(dir string, d digest.Digest) string {
	return filepath.Join(dir, "blobs", d.Algorithm().String(), d.Encoded())
}

// pickManifest selects the manifest of tag (or the only one) in the index.
func pickManifest(dir string, idx ociIndex, tag, arch string) (Descriptor, error) {
	var found []Descriptor
	for _, m := range idx.Manifests {
		if tag == "" || m.Annotations[AnnotationRefName] == tag {
			found = append(found, m)
		}
	}
	switch {
	case len(found) == 0 && tag != "":
		return Descriptor{}, fmt.Errorf("tag %q: %w", tag, ErrNotFound)
	case len(found) == 0:
		return Descriptor{}, fmt.Errorf("index.json lists no manifest: %w", ErrNotFound)
	case len(found) > 1:
		var tags []string
		for _, m := range found {
			t := m.Annotations[AnnotationRefName]
			if t == "" {
				t = "-"
			}
			tags = append(tags, t)
		}
		return Descriptor{}, classified{fmt.Errorf("index.json lists %d manifests (tags %s): name one as DIR:TAG",
			len(found), strings.Join(tags, ", ")), ErrInvalidArgument}
	}
	d := found[0]
	if d.MediaType == ociIndexType || d.MediaType == dockerListType {
		// A multi-platform image: take the only manifest, or linux/<arch>.
		var nested ociIndex
		if err := readBlob(dir, d, &nested); err != nil {
			return d, err
		}
		if len(nested.Manifests) == 1 {
			return nested.Manifests[0], nil
		}
		for _, m := range nested.Manifests {
			if m.Platform != nil && m.Platform.OS == "linux" && m.Platform.Architecture == arch {
				return m, nil
			}
		}
		return d, fmt.Errorf("no linux/%s manifest in %s: %w", arch, d.Digest, ErrNotFound)
	}
	return d, nil
}
