package command

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/opencontainers/go-digest"
	"github.com/spf13/cobra"

	"github.com/stratafs/strata/snapshot"
)

type importImageOptions struct{ g *globalOptions }

func newImportImageCommand(g *globalOptions) *cobra.Command {
	o := &importImageOptions{g: g}
	return &cobra.Command{
		Use:   "import-image OCI_LAYOUT_DIR[:TAG]",
		Short: "Import the layers of an image from an OCI layout directory",
		Long: `Read OCI_LAYOUT_DIR/index.json, pick the manifest tagged TAG (annotation
org.opencontainers.image.ref.name) or the only one, and import its layers in
order as with 'strata import', verifying each blob's digest and each
layer's diff ID against the image config. Prints the top chain ID: prepare
containers on it.`,
		Example: `  strata import-image ./alpine-oci:3.20`,
		Args:    exactArgs(1, "OCI_LAYOUT_DIR[:TAG]"),
		ValidArgsFunction: func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
			return nil, cobra.ShellCompDirectiveFilterDirs
		},
		RunE: func(cmd *cobra.Command, args []string) error { return o.run(cmd, args[0]) },
	}
}

// OCI image-spec documents, the fields import-image reads.
type ociDescriptor struct {
	MediaType   string            `json:"mediaType"`
	Digest      digest.Digest     `json:"digest"`
	Size        int64             `json:"size"`
	Annotations map[string]string `json:"annotations,omitempty"`
	Platform    *struct {
		OS           string `json:"os"`
		Architecture string `json:"architecture"`
	} `json:"platform,omitempty"`
}

type ociIndex struct {
	SchemaVersion int             `json:"schemaVersion"`
	MediaType     string          `json:"mediaType,omitempty"`
	Manifests     []ociDescriptor `json:"manifests"`
}

type ociManifest struct {
	SchemaVersion int             `json:"schemaVersion"`
	MediaType     string          `json:"mediaType,omitempty"`
	Config        ociDescriptor   `json:"config"`
	Layers        []ociDescriptor `json:"layers"`
}

type ociConfig struct {
	RootFS struct {
		Type    string          `json:"type"`
		DiffIDs []digest.Digest `json:"diff_ids"`
	} `json:"rootfs"`
}

const (
	ociRefName       = "org.opencontainers.image.ref.name"
	ociIndexType     = "application/vnd.oci.image.index.v1+json"
	dockerListType   = "application/vnd.docker.distribution.manifest.list.v2+json"
	ociLayoutVersion = "1.0.0"
)

// splitLayoutRef splits DIR[:TAG]; a DIR that exists as given wins.
func splitLayoutRef(ref string) (dir, tag string) {
	if fi, err := os.Stat(ref); err == nil && fi.IsDir() {
		return ref, ""
	}
	if i := strings.LastIndex(ref, ":"); i > 0 && !strings.Contains(ref[i+1:], "/") {
		return ref[:i], ref[i+1:]
	}
	return ref, ""
}

// readBlob reads and verifies a small JSON blob of the layout.
func readBlob(dir string, d ociDescriptor, v any) error {
	if err := d.Digest.Validate(); err != nil {
		return fmt.Errorf("descriptor %q: %w", d.Digest, snapshot.ErrInvalidArgument)
	}
	b, err := os.ReadFile(blobPath(dir, d.Digest))
	if err != nil {
		return fmt.Errorf("blob %s: %w", d.Digest, err)
	}
	if got := d.Digest.Algorithm().FromBytes(b); got != d.Digest {
		return fmt.Errorf("blob %s: content has digest %s: %w", d.Digest, got, snapshot.ErrInvalidArgument)
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("blob %s: %w: %w", d.Digest, snapshot.ErrInvalidArgument, err)
	}
	return nil
}

func blobPath(dir string, d digest.Digest) string {
	return filepath.Join(dir, "blobs", d.Algorithm().String(), d.Encoded())
}

// pickManifest selects the manifest of tag (or the only one) in the index.
func pickManifest(dir string, idx ociIndex, tag string) (ociDescriptor, error) {
	var found []ociDescriptor
	for _, m := range idx.Manifests {
		if tag == "" || m.Annotations[ociRefName] == tag {
			found = append(found, m)
		}
	}
	switch {
	case len(found) == 0 && tag != "":
		return ociDescriptor{}, fmt.Errorf("tag %q: %w", tag, snapshot.ErrNotFound)
	case len(found) == 0:
		return ociDescriptor{}, fmt.Errorf("index.json lists no manifest: %w", snapshot.ErrNotFound)
	case len(found) > 1:
		var tags []string
		for _, m := range found {
			tags = append(tags, orDash(m.Annotations[ociRefName]))
		}
		return ociDescriptor{}, usagef("index.json lists %d manifests (tags %s): name one as DIR:TAG", len(found), strings.Join(tags, ", "))
	}
	d := found[0]
	if d.MediaType == ociIndexType || d.MediaType == dockerListType {
		// A multi-platform image: take the only manifest, or linux/<ours>.
		var nested ociIndex
		if err := readBlob(dir, d, &nested); err != nil {
			return d, err
		}
		if len(nested.Manifests) == 1 {
			return nested.Manifests[0], nil
		}
		for _, m := range nested.Manifests {
			if m.Platform != nil && m.Platform.OS == "linux" && m.Platform.Architecture == goarch() {
				return m, nil
			}
		}
		return d, fmt.Errorf("no linux/%s manifest in %s: %w", goarch(), d.Digest, snapshot.ErrNotFound)
	}
	return d, nil
}

func (o *importImageOptions) run(cmd *cobra.Command, ref string) error {
	dir, tag := splitLayoutRef(ref)
	fail := func(err error) error { return fmt.Errorf("import-image %q: %w", ref, err) }
	var idx ociIndex
	b, err := os.ReadFile(filepath.Join(dir, "index.json"))
	if err != nil {
		return fail(pathCause(err))
	}
	if err := json.Unmarshal(b, &idx); err != nil {
		return fail(fmt.Errorf("index.json: %w: %w", snapshot.ErrInvalidArgument, err))
	}
	md, err := pickManifest(dir, idx, tag)
	if err != nil {
		return fail(err)
	}
	var m ociManifest
	if err := readBlob(dir, md, &m); err != nil {
		return fail(err)
	}
	var cfg ociConfig
	if err := readBlob(dir, m.Config, &cfg); err != nil {
		return fail(err)
	}
	if len(cfg.RootFS.DiffIDs) != len(m.Layers) {
		return fail(fmt.Errorf("config lists %d diff IDs for %d layers: %w", len(cfg.RootFS.DiffIDs), len(m.Layers), snapshot.ErrInvalidArgument))
	}
	ctx := cmdContext(cmd)
	return o.g.withStore(false, func(s *snapshot.Store) error {
		var out []importedLayer
		parent := ""
		for i, l := range m.Layers {
			if err := l.Digest.Validate(); err != nil {
				return fail(fmt.Errorf("layer %d: digest %q: %w", i+1, l.Digest, snapshot.ErrInvalidArgument))
			}
			spec := layerSpec{
				label:  fmt.Sprintf("layer %d/%d %s", i+1, len(m.Layers), shortKey(l.Digest.String())),
				digest: l.Digest, diffID: cfg.RootFS.DiffIDs[i],
			}
			il, err := importFile(ctx, cmd, s, blobPath(dir, l.Digest), parent, spec)
			if err != nil {
				return fail(err)
			}
			out = append(out, il)
			parent = il.ChainID
		}
		if o.g.json() {
			return writeJSON(cmd.OutOrStdout(), map[string]any{"manifest": md.Digest, "layers": out, "chain_id": parent})
		}
		_, err := fmt.Fprintln(cmd.OutOrStdout(), parent)
		return err
	})
}
