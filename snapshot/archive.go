package snapshot

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"

	"github.com/stratafs/strata/overlay"
	"github.com/stratafs/strata/snapshot/archive"
)

// This file wires the store to snapshot/archive: OCI layer tars in
// (ImportTar, on top of the Import seam) and out (Diff).

// overlayFormat is the xattr encoding of the store's layers.
func (s *Store) overlayFormat() overlay.Format {
	return overlay.Format{UserXattr: slices.Contains(s.format.OverlayOptions, "userxattr")}
}

// ImportTar unpacks the OCI layer tar r (plain, gzip or zstd) as the
// committed snapshot name on parent, with archive.Apply; the commit makes
// the layer durable before it records it (see Durability). aopts are
// passed to archive.Apply after the store's own options (format; as non-root
// also unprivilegedApply's), e.g.
// archive.WithExpectedDiffID. The Summary carries the digests that were
// computed while reading. A stream the archive package rejects (digest
// mismatch, unsafe path, malformed entry) fails with ErrInvalidArgument
// as well as the archive sentinel; nothing of it is left in the store.
func (s *Store) ImportTar(ctx context.Context, name, parent string, r io.Reader, aopts []archive.ApplyOption, opts ...Opt) (Info, archive.Summary, error) {
	var sum archive.Summary
	aopts = append(append([]archive.ApplyOption{archive.WithFormat(s.overlayFormat())}, unprivilegedApply()...), aopts...)
	info, err := s.Import(ctx, name, parent, r, func(ctx context.Context, dir string, r io.Reader) error {
		var err error
		if sum, err = archive.Apply(ctx, dir, r, aopts...); err != nil {
			return classifyArchive(err)
		}
		return nil
	}, opts...)
	return info, sum, err
}

// Diff writes the own changes of key (an active or committed snapshot) as
// an OCI layer tar to w, with archive.WriteDiff; dopts (e.g.
// archive.WithCompression) follow the store's own format option. A view
// has no changes of its own: ErrFailedPrecondition. Diff of an active
// snapshot that is being written gives no consistent result.
func (s *Store) Diff(ctx context.Context, w io.Writer, key string, dopts ...archive.DiffOption) (archive.DiffSummary, error) {
	var layer string
	var lowers []string
	err := s.view(func(b buckets) error {
		r, err := b.get(key)
		if err != nil {
			return err
		}
		if r.Kind == KindView {
			return fmt.Errorf("a view has no changes of its own: %w", ErrFailedPrecondition)
		}
		layer = s.fsDir(r.ID)
		for _, id := range r.Chain {
			lowers = append(lowers, s.fsDir(id))
		}
		return nil
	})
	if err != nil {
		return archive.DiffSummary{}, fmt.Errorf("diff %q: %w", key, err)
	}
	dopts = append([]archive.DiffOption{archive.WithDiffFormat(s.overlayFormat())}, dopts...)
	sum, err := archive.WriteDiff(ctx, w, layer, lowers, dopts...)
	if err != nil {
		return sum, fmt.Errorf("diff %q: %w", key, err)
	}
	return sum, nil
}

// classifyArchive adds ErrInvalidArgument to the archive errors that
// blame the stream, so callers (and the containerd adapter) can classify
// them without knowing the archive package.
func classifyArchive(err error) error {
	for _, e := range []error{archive.ErrDigestMismatch, archive.ErrUnsafePath, archive.ErrInvalidArchive, archive.ErrRefused} {
		if errors.Is(err, e) {
			return fmt.Errorf("%w: %w", ErrInvalidArgument, err)
		}
	}
	return err
}

// unprivilegedApply is the store's default tar policy when it does not run
// as root: the extracting user owns every entry, device nodes are left
// out (counted) and set-user-ID/set-group-ID bits are cleared (counted),
// so an unprivileged store never holds what only root may create. As
// root, owners, devices and set-ID bits are kept as the layer has them.
// Options the caller passes come after and win.
func unprivilegedApply() []archive.ApplyOption {
	if os.Geteuid() == 0 {
		return nil
	}
	return []archive.ApplyOption{archive.WithoutChown(), archive.WithDevices(archive.DevicesSkip), archive.WithSetID(archive.SetIDStrip)}
}
