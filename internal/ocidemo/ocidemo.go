// Package ocidemo writes a small three-layer image as an OCI image layout,
// for strata's demo (strata debug make-demo-image) and tests: real gzip
// layer tars with a whiteout and an opaque dir, a config with diff IDs, a
// manifest and an index.json tagged "demo".
//
//	layer 1: /etc/motd, /etc/os-release, /app/config/{a,b}.conf,
//	         /bin/hello (a script), /var/cache/big (64 KiB)
//	layer 2: changes /etc/motd, adds /app/data/x, deletes /var/cache/big
//	         (".wh.big" whiteout)
//	layer 3: makes /app/config opaque (".wh..wh..opq") with only c.conf,
//	         adds /etc/hostname
package ocidemo

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"
)

// Tag is the ref name annotation of the demo manifest.
const Tag = "demo"

// Entry is one entry of a layer: a dir ("dir/"), a file (content), a
// symlink ("->target") or an OCI whiteout / opaque marker (by name).
type Entry struct {
	Name    string
	Content string
	Mode    int64
}

// Layers are the demo's layers, bottom first.
var Layers = [][]Entry{
	{
		{Name: "etc/", Mode: 0o755},
		{Name: "etc/motd", Content: "welcome to layer 1\n", Mode: 0o644},
		{Name: "etc/os-release", Content: "NAME=strata-demo\nVERSION=1\n", Mode: 0o644},
		{Name: "app/", Mode: 0o755},
		{Name: "app/config/", Mode: 0o755},
		{Name: "app/config/a.conf", Content: "a=1\n", Mode: 0o644},
		{Name: "app/config/b.conf", Content: "b=1\n", Mode: 0o644},
		{Name: "bin/", Mode: 0o755},
		{Name: "bin/hello", Content: "#!/bin/sh\necho hello from strata\n", Mode: 0o755},
		{Name: "var/", Mode: 0o755},
		{Name: "var/cache/", Mode: 0o755},
		{Name: "var/cache/big", Content: strings.Repeat("x", 64<<10), Mode: 0o644},
	},
	{
		{Name: "etc/", Mode: 0o755},
		{Name: "etc/motd", Content: "welcome to layer 2\n", Mode: 0o644},
		{Name: "app/", Mode: 0o755},
		{Name: "app/data/", Mode: 0o755},
		{Name: "app/data/x", Content: "data\n", Mode: 0o644},
		{Name: "var/", Mode: 0o755},
		{Name: "var/cache/", Mode: 0o755},
		{Name: "var/cache/.wh.big"},
	},
	{
		{Name: "app/", Mode: 0o755},
		{Name: "app/config/", Mode: 0o755},
		{Name: "app/config/.wh..wh..opq"},
		{Name: "app/config/c.conf", Content: "c=3\n", Mode: 0o644},
		{Name: "etc/", Mode: 0o755},
		{Name: "etc/hostname", Content: "demo\n", Mode: 0o644},
	},
}

// Image describes what Write wrote.
type Image struct {
	Manifest digest.Digest
	Layers   []digest.Digest // blob digests (gzip), bottom first
	DiffIDs  []digest.Digest // uncompressed tar digests, bottom first
	ChainIDs []digest.Digest // OCI chain IDs, bottom first
}

var epoch = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// LayerTar returns the uncompressed tar of entries.
func LayerTar(entries []Entry) ([]byte, error) {
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	for _, e := range entries {
		h := &tar.Header{Name: e.Name, Mode: e.Mode, ModTime: epoch, Format: tar.FormatPAX}
		switch {
		case strings.HasSuffix(e.Name, "/"):
			h.Typeflag = tar.TypeDir
		case strings.HasPrefix(e.Content, "->"):
			h.Typeflag, h.Linkname = tar.TypeSymlink, strings.TrimPrefix(e.Content, "->")
		default:
			h.Typeflag, h.Size = tar.TypeReg, int64(len(e.Content))
		}
		if err := tw.WriteHeader(h); err != nil {
			return nil, err
		}
		if h.Typeflag == tar.TypeReg {
			if _, err := tw.Write([]byte(e.Content)); err != nil {
				return nil, err
			}
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

// Write writes the demo image as an OCI layout into dir (created if
// needed).
func Write(dir string) (Image, error) {
	var img Image
	blobs := filepath.Join(dir, "blobs", "sha256")
	if err := os.MkdirAll(blobs, 0o755); err != nil {
		return img, err
	}
	put := func(b []byte) (digest.Digest, error) {
		d := digest.FromBytes(b)
		return d, os.WriteFile(filepath.Join(blobs, d.Encoded()), b, 0o644)
	}
	type desc struct {
		MediaType   string            `json:"mediaType"`
		Digest      digest.Digest     `json:"digest"`
		Size        int64             `json:"size"`
		Annotations map[string]string `json:"annotations,omitempty"`
	}
	var layerDescs []desc
	var chain digest.Digest
	for _, entries := range Layers {
		raw, err := LayerTar(entries)
		if err != nil {
			return img, err
		}
		var gz bytes.Buffer
		zw := gzip.NewWriter(&gz)
		if _, err := zw.Write(raw); err != nil {
			return img, err
		}
		if err := zw.Close(); err != nil {
			return img, err
		}
		d, err := put(gz.Bytes())
		if err != nil {
			return img, err
		}
		diffID := digest.FromBytes(raw)
		if chain == "" {
			chain = diffID
		} else {
			chain = digest.FromString(chain.String() + " " + diffID.String())
		}
		img.Layers = append(img.Layers, d)
		img.DiffIDs = append(img.DiffIDs, diffID)
		img.ChainIDs = append(img.ChainIDs, chain)
		layerDescs = append(layerDescs, desc{MediaType: "application/vnd.oci.image.layer.v1.tar+gzip", Digest: d, Size: int64(gz.Len())})
	}
	cfg, err := json.Marshal(map[string]any{
		"architecture": "amd64", "os": "linux", "created": epoch,
		"config": map[string]any{"Cmd": []string{"/bin/hello"}},
		"rootfs": map[string]any{"type": "layers", "diff_ids": img.DiffIDs},
	})
	if err != nil {
		return img, err
	}
	cfgD, err := put(cfg)
	if err != nil {
		return img, err
	}
	man, err := json.Marshal(map[string]any{
		"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
		"config": desc{MediaType: "application/vnd.oci.image.config.v1+json", Digest: cfgD, Size: int64(len(cfg))},
		"layers": layerDescs,
	})
	if err != nil {
		return img, err
	}
	if img.Manifest, err = put(man); err != nil {
		return img, err
	}
	idx, err := json.MarshalIndent(map[string]any{
		"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
		"manifests": []desc{{MediaType: "application/vnd.oci.image.manifest.v1+json", Digest: img.Manifest,
			Size: int64(len(man)), Annotations: map[string]string{"org.opencontainers.image.ref.name": Tag}}},
	}, "", "  ")
	if err != nil {
		return img, err
	}
	if err := os.WriteFile(filepath.Join(dir, "index.json"), idx, 0o644); err != nil {
		return img, err
	}
	if err := os.WriteFile(filepath.Join(dir, "oci-layout"), []byte(`{"imageLayoutVersion":"1.0.0"}`), 0o644); err != nil {
		return img, fmt.Errorf("oci-layout: %w", err)
	}
	return img, nil
}
