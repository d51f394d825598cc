package snapshot

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
)

// Import unpacks one layer as the committed snapshot name on parent ("" for
// a base layer): it prepares a temporary active snapshot, lets apply write
// the layer from r straight into its upper dir (no mount needed: apply
// writes strata's on-disk format), and commits it as name with opts. On
// any failure the temporary snapshot is removed. snapshot/archive.Apply is
// the usual apply.
//
// If name already exists, Import fails with ErrAlreadyExists before
// reading r.
func (s *Store) Import(ctx context.Context, name, parent string, r io.Reader, apply ApplyFunc, opts ...Opt) (Info, error) {
	info, err := s.importLayer(ctx, name, parent, r, apply, opts)
	if err != nil {
		return Info{}, fmt.Errorf("import %q: %w", name, err)
	}
	return info, nil
}

func (s *Store) importLayer(ctx context.Context, name, parent string, r io.Reader, apply ApplyFunc, opts []Opt) (_ Info, err error) {
	if apply == nil {
		return Info{}, fmt.Errorf("no apply func: %w", ErrInvalidArgument)
	}
	if _, err := s.Stat(ctx, name); err == nil {
		return Info{}, ErrAlreadyExists
	} else if !errors.Is(err, ErrNotFound) {
		return Info{}, err
	}
	var rnd [8]byte
	rand.Read(rnd[:])
	key := "import-" + hex.EncodeToString(rnd[:]) + "-" + name
	if _, err := s.Prepare(ctx, key, parent, WithLabels(map[string]string{importLabel: name})); err != nil {
		return Info{}, err
	}
	defer func() {
		if err != nil {
			if rmErr := s.Remove(context.WithoutCancel(ctx), key); rmErr != nil {
				err = fmt.Errorf("%w (and removing the temporary snapshot failed: %v)", err, rmErr)
			}
		}
	}()
	dir, err := s.upperDir(key)
	if err != nil {
		return Info{}, err
	}
	if err := apply(ctx, dir, r); err != nil {
		return Info{}, fmt.Errorf("apply: %w", err)
	}
	if err := s.Commit(ctx, name, key, opts...); err != nil {
		return Info{}, err
	}
	return s.Stat(ctx, name)
}

// importLabel marks the temporary active snapshot of an Import (its value
// is the name being imported). Commit replaces the labels, so only an
// import that never finished carries it; Open removes those.
const importLabel = "strata.io/import-in-progress"

// removeStaleImports removes the temporary snapshots of imports that a
// crash interrupted. Only Open calls it: then no import can be in flight.
func (s *Store) removeStaleImports(ctx context.Context) error {
	var stale []string
	if err := s.view(func(b buckets) error {
		return b.snaps.ForEach(func(k, _ []byte) error {
			r, err := b.get(string(k))
			if err != nil {
				return err
			}
			if _, ok := r.Labels[importLabel]; ok && r.Kind == KindActive {
				stale = append(stale, string(k))
			}
			return nil
		})
	}); err != nil {
		return fmt.Errorf("stale imports: %w", err)
	}
	for _, k := range stale {
		if err := s.Remove(ctx, k); err != nil && !errors.Is(err, ErrNotFound) {
			return fmt.Errorf("stale import: %w", err)
		}
	}
	return nil
}

// upperDir returns the fs dir of the active snapshot key.
func (s *Store) upperDir(key string) (string, error) {
	var dir string
	err := s.view(func(b buckets) error {
		r, err := b.get(key)
		if err != nil {
			return err
		}
		if r.Kind != KindActive {
			return fmt.Errorf("%q is %s, not active: %w", key, r.Kind, ErrFailedPrecondition)
		}
		dir = s.fsDir(r.ID)
		return nil
	})
	return dir, err
}
