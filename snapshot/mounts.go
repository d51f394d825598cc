package snapshot

import (
	"fmt"
	"strings"

	"github.com/stratafs/strata/overlay"
)

// backend turns a snapshot and its chain into mounts. It is the seam
// between the store and the ways of assembling a union: kernel overlayfs
// (kernelBackend) and strata's FUSE filesystem (fuseBackend).
type backend interface {
	// mounts returns the mounts of r (its ancestors are r.Chain). It runs
	// inside a metadata transaction: no I/O.
	mounts(s *Store, r *record) ([]Mount, error)
}

func newBackend(b Backend) (backend, error) {
	switch b {
	case BackendKernel:
		return kernelBackend{}, nil
	case BackendFUSE:
		return fuseBackend{}, nil
	}
	return nil, fmt.Errorf("backend %v: %w", b, ErrInvalidArgument)
}

// kernelBackend assembles snapshots as containerd's overlayfs snapshotter
// does:
//
//   - active without parent: rw bind mount of its fs dir;
//   - active with parents: overlay, upperdir/workdir its own, lowerdir the
//     chain;
//   - view or committed snapshot of one layer: ro bind mount of that layer;
//   - view or committed snapshot of several layers: overlay with lowerdir
//     only (read-only by construction), plus "ro".
//
// Overlay mounts carry the store's format options (redirect_dir=on, …).
type kernelBackend struct{}

func (kernelBackend) mounts(s *Store, r *record) ([]Mount, error) {
	n := len(r.Chain) // lower layers: the chain, plus itself for a committed snapshot
	if r.Kind == KindCommitted {
		n++
	}
	if n > overlay.MaxKernelLowers {
		return nil, fmt.Errorf("kernel backend: chain of %d layers: %w: %w (limit %d; flatten the chain or use the FUSE backend)",
			n, ErrFailedPrecondition, overlay.ErrTooManyLayers, overlay.MaxKernelLowers)
	}
	if r.Kind == KindActive {
		if len(r.Chain) == 0 {
			return []Mount{{Type: "bind", Source: s.fsDir(r.ID), Options: []string{"rw", "rbind"}}}, nil
		}
		opts := append([]string(nil), s.format.OverlayOptions...)
		opts = append(opts,
			"workdir="+s.workDir(r.ID),
			"upperdir="+s.fsDir(r.ID),
			"lowerdir="+lowerdirs(s, r.Chain))
		return []Mount{{Type: "overlay", Source: "overlay", Options: opts}}, nil
	}
	// Read-only: a view has an empty fs dir of its own that holds nothing;
	// a committed snapshot's own layer is the top of what it shows.
	layers := r.Chain
	if r.Kind == KindCommitted {
		layers = append([]uint64{r.ID}, r.Chain...)
	}
	switch len(layers) {
	case 0:
		return []Mount{{Type: "bind", Source: s.fsDir(r.ID), Options: []string{"ro", "rbind"}}}, nil
	case 1:
		return []Mount{{Type: "bind", Source: s.fsDir(layers[0]), Options: []string{"ro", "rbind"}}}, nil
	}
	opts := append([]string{"ro"}, s.format.OverlayOptions...)
	opts = append(opts, "lowerdir="+lowerdirs(s, layers))
	return []Mount{{Type: "overlay", Source: "overlay", Options: opts}}, nil
}

func lowerdirs(s *Store, layers []uint64) string {
	var b strings.Builder
	for i, id := range layers {
		if i > 0 {
			b.WriteByte(':')
		}
		b.WriteString(s.fsDir(id))
	}
	return b.String()
}
