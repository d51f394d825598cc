package snapshot

import (
	"context"
	"fmt"

	"github.com/stratafs/strata/overlay"
)

// This file gives inspection tools (strata layers, files, which) read-only
// access to the layer dirs of a snapshot. Callers must not write to them.

// Layer is one layer of a snapshot's stack.
type Layer struct {
	Key    string // key or name of the snapshot that owns the layer
	Kind   Kind
	Dir    string // the layer's dir (an active snapshot's upper dir)
	Labels map[string]string
	Usage  Usage // committed: measured at commit; active: measured now
}

// Layers returns the layers that make up key, top first: key's own layer
// (none for a view, whose dir is always empty), then its ancestors.
func (s *Store) Layers(ctx context.Context, key string) ([]Layer, error) {
	var out []Layer
	err := s.view(func(b buckets) error {
		r, err := b.get(key)
		if err != nil {
			return err
		}
		if r.Kind != KindView {
			out = append(out, Layer{Key: key, Kind: r.Kind, Dir: s.fsDir(r.ID), Labels: r.Labels,
				Usage: Usage{Inodes: r.Inodes, Size: r.Size}})
		}
		for p := r.Parent; p != ""; {
			pr, err := b.get(p)
			if err != nil {
				return fmt.Errorf("ancestor %q: %w", p, err)
			}
			out = append(out, Layer{Key: p, Kind: pr.Kind, Dir: s.fsDir(pr.ID), Labels: pr.Labels,
				Usage: Usage{Inodes: pr.Inodes, Size: pr.Size}})
			p = pr.Parent
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("layers %q: %w", key, err)
	}
	if len(out) > 0 && out[0].Kind == KindActive {
		u, err := diskUsage(ctx, out[0].Dir)
		if err != nil {
			return nil, fmt.Errorf("layers %q: %w", key, err)
		}
		out[0].Usage = u
	}
	return out, nil
}

// LayerFormat returns how overlay metadata is encoded in the store's
// layers (for overlay.Format.WalkLayer and Resolve).
func (s *Store) LayerFormat() overlay.Format { return s.overlayFormat() }
