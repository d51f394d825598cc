package snapshot

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/containerd/containerd/v2/pkg/filters"
	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"

	"github.com/stratafs/strata/overlay"
)

// update and view run fn in a read-write or read-only transaction with the
// store's buckets.
func (s *Store) update(fn func(b buckets) error) error {
	if s.readOnly {
		return ErrReadOnly
	}
	return mapClosed(s.db.Update(func(tx *bolt.Tx) error {
		b, err := getBuckets(tx)
		if err != nil {
			return err
		}
		return fn(b)
	}))
}

func (s *Store) view(fn func(b buckets) error) error {
	return mapClosed(s.db.View(func(tx *bolt.Tx) error {
		b, err := getBuckets(tx)
		if err != nil {
			return err
		}
		return fn(b)
	}))
}

func mapClosed(err error) error {
	if errors.Is(err, bolterrors.ErrDatabaseNotOpen) {
		return ErrClosed
	}
	return err
}

// Prepare creates an active snapshot key on parent ("" for none) and
// returns the mounts that assemble it.
func (s *Store) Prepare(ctx context.Context, key, parent string, opts ...Opt) ([]Mount, error) {
	m, err := s.create(ctx, KindActive, key, parent, opts)
	if err != nil {
		return nil, fmt.Errorf("prepare %q: %w", key, err)
	}
	return m, nil
}

// View creates a read-only view key of parent ("" for an empty view) and
// returns its mounts.
func (s *Store) View(ctx context.Context, key, parent string, opts ...Opt) ([]Mount, error) {
	m, err := s.create(ctx, KindView, key, parent, opts)
	if err != nil {
		return nil, fmt.Errorf("view %q: %w", key, err)
	}
	return m, nil
}

func (s *Store) create(ctx context.Context, kind Kind, key, parent string, opts []Opt) ([]Mount, error) {
	m, r, err := s.createRecord(ctx, kind, key, parent, opts)
	if err != nil {
		return nil, err
	}
	// FUSE backend: the server runs before the mounts are handed out.
	if err := s.ensureServed(key, r); err != nil {
		if rmErr := s.remove(ctx, key); rmErr != nil {
			err = fmt.Errorf("%w (and removing the snapshot again failed: %v)", err, rmErr)
		}
		return nil, err
	}
	return m, nil
}

func (s *Store) createRecord(ctx context.Context, kind Kind, key, parent string, opts []Opt) (_ []Mount, _ *record, err error) {
	if s.readOnly {
		return nil, nil, ErrReadOnly
	}
	if key == "" {
		return nil, nil, fmt.Errorf("empty key: %w", ErrInvalidArgument)
	}
	var info Info
	for _, o := range opts {
		if err := o(&info); err != nil {
			return nil, nil, err
		}
	}
	if err := ctx.Err(); err != nil {
		return nil, nil, err
	}
	s.dirMu.RLock()
	defer s.dirMu.RUnlock()

	// Build the dirs under staging/, outside the transaction.
	tmp, err := os.MkdirTemp(filepath.Join(s.root, stagingDir), "new-")
	if err != nil {
		return nil, nil, err
	}
	defer func() {
		if tmp != "" {
			_ = os.RemoveAll(tmp) // best effort: Cleanup removes leftovers
		}
	}()
	if err := os.Mkdir(filepath.Join(tmp, "fs"), 0o755); err != nil {
		return nil, nil, err
	}
	if kind == KindActive {
		if err := os.Mkdir(filepath.Join(tmp, "work"), 0o711); err != nil {
			return nil, nil, err
		}
	}

	var (
		renamed string
		mounts  []Mount
		rec     *record
	)
	err = s.update(func(b buckets) error {
		if _, err := b.get(key); err == nil {
			return ErrAlreadyExists
		} else if !errors.Is(err, ErrNotFound) {
			return err
		}
		var chain []uint64
		if parent != "" {
			pr, err := b.get(parent)
			if err != nil {
				return fmt.Errorf("parent %q: %w", parent, err)
			}
			if pr.Kind != KindCommitted {
				return fmt.Errorf("parent %q is %s, not committed: %w", parent, pr.Kind, ErrInvalidArgument)
			}
			chain = append([]uint64{pr.ID}, pr.Chain...)
		}
		id, err := b.snaps.NextSequence()
		if err != nil {
			return err
		}
		if len(chain) > 0 {
			if err := b.addChild(chain[0], id); err != nil {
				return err
			}
		}
		now := time.Now().UTC()
		r := &record{ID: id, Kind: kind, Parent: parent, Chain: chain, Labels: info.Labels, Created: now, Updated: now}
		if err := b.put(key, r); err != nil {
			return err
		}
		if mounts, err = s.backend.mounts(s, r); err != nil {
			return err
		}
		rec = r
		dst := s.snapDir(id)
		if err := os.Rename(tmp, dst); err != nil {
			return err
		}
		renamed = dst
		return nil
	})
	if err != nil {
		if renamed != "" {
			// The transaction failed after the rename: undo it.
			if rmErr := os.RemoveAll(renamed); rmErr != nil {
				err = fmt.Errorf("%w (and removing %s failed: %v; Cleanup will retry)", err, renamed, rmErr)
			}
		}
		return nil, nil, err
	}
	tmp = ""
	return mounts, rec, nil
}

// Commit turns the active snapshot key into the committed snapshot name.
// Labels are replaced by those in opts. WithParent rebases an active
// snapshot that has no parent onto a committed one.
func (s *Store) Commit(ctx context.Context, name, key string, opts ...Opt) error {
	if err := s.commit(ctx, name, key, opts); err != nil {
		return fmt.Errorf("commit %q as %q: %w", key, name, err)
	}
	return nil
}

func (s *Store) commit(ctx context.Context, name, key string, opts []Opt) error {
	if name == "" || key == "" {
		return fmt.Errorf("empty name or key: %w", ErrInvalidArgument)
	}
	var info Info
	for _, o := range opts {
		if err := o(&info); err != nil {
			return err
		}
	}
	// Measure usage before the transaction: the snapshot may not be
	// written to any more (its mounts are gone by contract), and a walk
	// inside the write transaction would stall every writer.
	var id uint64
	if err := s.view(func(b buckets) error {
		r, err := b.get(key)
		if err != nil {
			return err
		}
		if r.Kind != KindActive {
			return fmt.Errorf("%q is %s, not active: %w", key, r.Kind, ErrFailedPrecondition)
		}
		id = r.ID
		return nil
	}); err != nil {
		return err
	}
	s.dirMu.RLock()
	defer s.dirMu.RUnlock()
	// The FUSE server (if any) goes first: nothing may write any more.
	// fuseMu stays held until the snapshot is committed, so that no
	// concurrent Mounts restarts it meanwhile (lock order: dirMu, fuseMu).
	s.fuseMu.Lock()
	defer s.fuseMu.Unlock()
	if err := s.stopServerIfAnyLocked(id); err != nil {
		return err
	}
	usage, err := diskUsage(ctx, s.fsDir(id))
	if err != nil {
		return fmt.Errorf("usage: %w", err)
	}
	// A committed layer is content the store vouches for (chain IDs name
	// it): its files reach the disk before the metadata says committed.
	if err := syncLayer(s.fsDir(id), usage.Inodes); err != nil {
		return fmt.Errorf("sync layer: %w", err)
	}
	// Its name index (a cache: a FUSE mount lists layers without one).
	if err := overlay.WriteIndexFile(s.fsDir(id), overlay.IndexPath(s.fsDir(id))); err != nil {
		return fmt.Errorf("index layer: %w", err)
	}

	err = s.update(func(b buckets) error {
		r, err := b.get(key)
		if err != nil {
			return err
		}
		if r.ID != id || r.Kind != KindActive {
			return fmt.Errorf("%q changed during commit: %w", key, ErrFailedPrecondition)
		}
		if _, err := b.get(name); err == nil {
			return fmt.Errorf("name %q: %w", name, ErrAlreadyExists)
		} else if !errors.Is(err, ErrNotFound) {
			return err
		}
		if info.Parent != r.Parent && info.Parent != "" {
			if r.Parent != "" {
				return fmt.Errorf("cannot change parent %q to %q (only a snapshot without parent can be rebased): %w",
					r.Parent, info.Parent, ErrInvalidArgument)
			}
			pr, err := b.get(info.Parent)
			if err != nil {
				return fmt.Errorf("parent %q: %w", info.Parent, err)
			}
			if pr.Kind != KindCommitted {
				return fmt.Errorf("parent %q is %s, not committed: %w", info.Parent, pr.Kind, ErrInvalidArgument)
			}
			r.Parent = info.Parent
			r.Chain = append([]uint64{pr.ID}, pr.Chain...)
			if err := b.addChild(pr.ID, r.ID); err != nil {
				return err
			}
		}
		now := time.Now().UTC()
		r.Kind, r.Labels, r.Created, r.Updated = KindCommitted, info.Labels, now, now
		r.Inodes, r.Size = usage.Inodes, usage.Size
		if err := b.snaps.Delete([]byte(key)); err != nil {
			return err
		}
		return b.put(name, r)
	})
	if err != nil {
		return err
	}
	// A committed layer needs no work dir; Check tolerates a leftover one.
	if err := removeAll(s.workDir(id)); err != nil {
		return fmt.Errorf("committed, but removing the work dir failed (Cleanup will retry): %w", err)
	}
	return nil
}

// Remove removes the snapshot key of any kind. A committed snapshot with
// children is refused with ErrFailedPrecondition.
func (s *Store) Remove(ctx context.Context, key string) error {
	if err := s.remove(ctx, key); err != nil {
		return fmt.Errorf("remove %q: %w", key, err)
	}
	return nil
}

func (s *Store) remove(ctx context.Context, key string) error {
	if key == "" {
		return fmt.Errorf("empty key: %w", ErrInvalidArgument)
	}
	s.dirMu.RLock()
	defer s.dirMu.RUnlock()
	var id uint64
	err := s.update(func(b buckets) error {
		r, err := b.get(key)
		if err != nil {
			return err
		}
		if b.hasChildren(r.ID) {
			return fmt.Errorf("snapshot has children: %w", ErrFailedPrecondition)
		}
		if len(r.Chain) > 0 {
			if err := b.removeChild(r.Chain[0], r.ID); err != nil {
				return err
			}
		}
		id = r.ID
		return b.snaps.Delete([]byte(key))
	})
	if err != nil {
		return err
	}
	if err := s.stopServerIfAny(id); err != nil {
		return fmt.Errorf("removed from metadata, but stopping its FUSE server failed (Open or Cleanup will retry): %w", err)
	}
	// After the commit: move the dir out of snapshots/ first (atomic), so a
	// failed RemoveAll leaves garbage in staging/, never a half dir with a
	// live-looking id.
	dir := s.snapDir(id)
	trash := filepath.Join(s.root, stagingDir, fmt.Sprintf("rm-%d", id))
	if err := os.Rename(dir, trash); err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil
		}
		return fmt.Errorf("removed from metadata, but moving %s aside failed (Cleanup will retry): %w", dir, err)
	}
	if err := removeAll(trash); err != nil {
		return fmt.Errorf("removed from metadata, but deleting %s failed (Cleanup will retry): %w", trash, err)
	}
	return nil
}

// Stat returns the Info of key.
func (s *Store) Stat(ctx context.Context, key string) (Info, error) {
	var info Info
	err := s.view(func(b buckets) error {
		r, err := b.get(key)
		if err != nil {
			return err
		}
		info = r.info(key)
		return nil
	})
	if err != nil {
		return Info{}, fmt.Errorf("stat %q: %w", key, err)
	}
	return info, nil
}

// Update changes the labels of info.Name and returns the new Info. With
// no fieldpaths the labels are replaced; "labels" replaces them too;
// "labels.K" sets (or, absent from info.Labels, deletes) the label K.
// Other fields are immutable: naming one is ErrInvalidArgument.
func (s *Store) Update(ctx context.Context, info Info, fieldpaths ...string) (Info, error) {
	var out Info
	err := s.update(func(b buckets) error {
		if info.Name == "" {
			return fmt.Errorf("empty name: %w", ErrInvalidArgument)
		}
		r, err := b.get(info.Name)
		if err != nil {
			return err
		}
		if len(fieldpaths) == 0 {
			fieldpaths = []string{"labels"}
		}
		for _, fp := range fieldpaths {
			if fp == "labels" {
				r.Labels = nil
				for k, v := range info.Labels {
					if r.Labels == nil {
						r.Labels = map[string]string{}
					}
					r.Labels[k] = v
				}
				continue
			}
			if k, ok := strings.CutPrefix(fp, "labels."); ok && k != "" {
				if v, ok := info.Labels[k]; ok {
					if r.Labels == nil {
						r.Labels = map[string]string{}
					}
					r.Labels[k] = v
				} else {
					delete(r.Labels, k)
				}
				continue
			}
			return fmt.Errorf("field %q cannot be updated: %w", fp, ErrInvalidArgument)
		}
		r.Updated = time.Now().UTC()
		if err := b.put(info.Name, r); err != nil {
			return err
		}
		out = r.info(info.Name)
		return nil
	})
	if err != nil {
		return Info{}, fmt.Errorf("update %q: %w", info.Name, err)
	}
	return out, nil
}

// Usage returns the disk usage of key's own layer. Committed snapshots
// report the usage measured at commit; active ones and views are measured
// now.
func (s *Store) Usage(ctx context.Context, key string) (Usage, error) {
	var (
		r   *record
		err error
	)
	err = s.view(func(b buckets) error {
		r, err = b.get(key)
		return err
	})
	if err != nil {
		return Usage{}, fmt.Errorf("usage %q: %w", key, err)
	}
	if r.Kind == KindCommitted {
		return Usage{Inodes: r.Inodes, Size: r.Size}, nil
	}
	u, err := diskUsage(ctx, s.fsDir(r.ID))
	if err != nil {
		return Usage{}, fmt.Errorf("usage %q: %w", key, err)
	}
	return u, nil
}

// Mounts returns the mounts that assemble key: writable for an active
// snapshot, read-only for a view or a committed snapshot.
func (s *Store) Mounts(ctx context.Context, key string) ([]Mount, error) {
	var (
		m   []Mount
		rec *record
	)
	err := s.view(func(b buckets) error {
		r, err := b.get(key)
		if err != nil {
			return err
		}
		rec = r
		m, err = s.backend.mounts(s, r)
		return err
	})
	if err == nil {
		// never hand out a dead (ENOTCONN) FUSE mount
		err = s.ensureServed(key, rec)
	}
	if err != nil {
		return nil, fmt.Errorf("mounts %q: %w", key, err)
	}
	return m, nil
}

// Walk calls fn for each snapshot that matches any of the filters
// (containerd's filter syntax over the fields kind, name, parent and
// labels.<key>; no filter matches all). fn sees a consistent snapshot of
// the metadata taken before the first call and may call into the Store.
func (s *Store) Walk(ctx context.Context, fn WalkFunc, fs ...string) error {
	filter, err := filters.ParseAll(fs...)
	if err != nil {
		return fmt.Errorf("walk: filter %q: %w: %w", fs, ErrInvalidArgument, err)
	}
	// Collect first, call fn outside the transaction, so fn may call back
	// into the store.
	var infos []Info
	err = s.view(func(b buckets) error {
		return b.snaps.ForEach(func(k, _ []byte) error {
			r, err := b.get(string(k))
			if err != nil {
				return err
			}
			info := r.info(string(k))
			if filter.Match(adaptInfo(info)) {
				infos = append(infos, info)
			}
			return nil
		})
	})
	if err != nil {
		return fmt.Errorf("walk: %w", err)
	}
	for _, info := range infos {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := fn(ctx, info); err != nil {
			return err
		}
	}
	return nil
}

func adaptInfo(info Info) filters.Adaptor {
	return filters.AdapterFunc(func(fieldpath []string) (string, bool) {
		if len(fieldpath) == 0 {
			return "", false
		}
		switch fieldpath[0] {
		case "kind":
			return info.Kind.String(), true
		case "name":
			return info.Name, true
		case "parent":
			return info.Parent, true
		case "labels":
			if len(fieldpath) < 2 {
				return "", false
			}
			v, ok := info.Labels[strings.Join(fieldpath[1:], ".")]
			return v, ok
		}
		return "", false
	})
}
