package snapshot

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/stratafs/strata/overlay"
)

// Cleanup removes what no metadata refers to: dirs under snapshots/ whose
// id no snapshot has, work dirs of snapshots that are not active,
// everything in staging/, and FUSE mounts under mounts/ of snapshots that
// are gone. It is safe to run while the store is in use.
func (s *Store) Cleanup(ctx context.Context) error {
	if s.readOnly {
		return fmt.Errorf("cleanup: %w", ErrReadOnly)
	}
	s.dirMu.Lock()
	defer s.dirMu.Unlock()
	ids, err := s.liveIDs()
	if err != nil {
		return fmt.Errorf("cleanup: %w", err)
	}
	var errs []error
	ents, err := os.ReadDir(filepath.Join(s.root, snapshotsDir))
	if err != nil {
		return fmt.Errorf("cleanup: %w", err)
	}
	for _, e := range ents {
		id, err := strconv.ParseUint(e.Name(), 10, 64)
		kind, live := ids[id]
		if err == nil && live {
			if kind != KindActive {
				if err := removeAll(s.workDir(id)); err != nil {
					errs = append(errs, err)
				}
			}
			continue
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := removeAll(filepath.Join(s.root, snapshotsDir, e.Name())); err != nil {
			errs = append(errs, err)
		}
	}
	if err := emptyDir(filepath.Join(s.root, stagingDir)); err != nil {
		errs = append(errs, err)
	}
	// FUSE mounts (and logs) of snapshots that are gone
	if ents, err := os.ReadDir(filepath.Join(s.root, mountsDir)); err == nil {
		for _, e := range ents {
			id, err := strconv.ParseUint(strings.TrimSuffix(e.Name(), ".log"), 10, 64)
			if _, live := ids[id]; err != nil || live {
				continue
			}
			if err := s.stopServerIfAny(id); err != nil {
				errs = append(errs, err)
			}
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("cleanup: %w", err)
	}
	return nil
}

func (s *Store) liveIDs() (map[uint64]Kind, error) {
	ids := map[uint64]Kind{}
	err := s.view(func(b buckets) error {
		return b.snaps.ForEach(func(k, _ []byte) error {
			r, err := b.get(string(k))
			if err != nil {
				return err
			}
			ids[r.ID] = r.Kind
			return nil
		})
	})
	return ids, err
}

// Check verifies that metadata and disk agree: every snapshot has its dirs
// (and an active one its work dir), ids are unique, parents exist and are
// committed, the children index matches the parents, no orphan dirs lie
// in snapshots/ or staging/, and nothing is mounted under the root but
// the live FUSE mounts of snapshots under mounts/ (a dead one, or one of
// a snapshot that is gone, is a problem). It
// returns nil, or an error that wraps ErrInconsistent and lists every
// problem. Check changes nothing. Run it while no operation is in flight
// to avoid reporting a staging dir that is being built.
func (s *Store) Check(ctx context.Context) error {
	s.dirMu.Lock()
	defer s.dirMu.Unlock()
	var problems []string
	add := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }

	ids := map[uint64]string{}
	live := map[uint64]*record{}
	err := s.view(func(b buckets) error {
		recs := map[string]*record{}
		if err := b.snaps.ForEach(func(k, _ []byte) error {
			r, err := b.get(string(k))
			if err != nil {
				add("%v", err)
				return nil
			}
			recs[string(k)] = r
			return nil
		}); err != nil {
			return err
		}
		for key, r := range recs {
			if r.Kind != KindActive && r.Kind != KindView && r.Kind != KindCommitted {
				add("%q: kind %d is unknown", key, r.Kind)
			}
			if other, dup := ids[r.ID]; dup {
				add("%q and %q share id %d", key, other, r.ID)
			}
			ids[r.ID] = key
			live[r.ID] = r
			if fi, err := os.Stat(s.fsDir(r.ID)); err != nil || !fi.IsDir() {
				add("%q (id %d): fs dir %s missing", key, r.ID, s.fsDir(r.ID))
			}
			_, werr := os.Lstat(s.workDir(r.ID))
			switch {
			case r.Kind == KindActive && werr != nil:
				add("%q (id %d): work dir %s missing", key, r.ID, s.workDir(r.ID))
			case r.Kind != KindActive && werr == nil:
				add("%q (id %d): %s snapshot has a work dir (Cleanup removes it)", key, r.ID, r.Kind)
			}
			if r.Parent == "" && len(r.Chain) > 0 {
				add("%q: no parent but a chain of %d ids", key, len(r.Chain))
			}
			if r.Parent != "" {
				pr, ok := recs[r.Parent]
				switch {
				case !ok:
					add("%q: parent %q does not exist (dangling)", key, r.Parent)
				case pr.Kind != KindCommitted:
					add("%q: parent %q is %s, not committed", key, r.Parent, pr.Kind)
				case !slices.Equal(r.Chain, append([]uint64{pr.ID}, pr.Chain...)):
					add("%q: chain %v disagrees with its parent %q (id %d, chain %v)", key, r.Chain, r.Parent, pr.ID, pr.Chain)
				}
				if len(r.Chain) > 0 && b.children.Get(childKey(r.Chain[0], r.ID)) == nil {
					add("%q (id %d): missing from the children index of id %d", key, r.ID, r.Chain[0])
				}
			}
		}
		// The children index must not name anything that is not a child.
		byID := map[uint64]*record{}
		for _, r := range recs {
			byID[r.ID] = r
		}
		return b.children.ForEach(func(k, _ []byte) error {
			if len(k) != 16 {
				add("children index: malformed key %x", k)
				return nil
			}
			p, c := binary.BigEndian.Uint64(k[:8]), binary.BigEndian.Uint64(k[8:])
			if r, ok := byID[c]; !ok || len(r.Chain) == 0 || r.Chain[0] != p {
				add("children index: id %d lists id %d, which is not its child", p, c)
			}
			return nil
		})
	})
	if err != nil {
		return fmt.Errorf("check %s: %w", s.root, err)
	}

	ents, err := os.ReadDir(filepath.Join(s.root, snapshotsDir))
	if err != nil {
		return fmt.Errorf("check %s: %w", s.root, err)
	}
	for _, e := range ents {
		id, err := strconv.ParseUint(e.Name(), 10, 64)
		if _, live := ids[id]; err != nil || !live {
			add("orphan dir %s", filepath.Join(s.root, snapshotsDir, e.Name()))
		}
	}
	if ents, err := os.ReadDir(filepath.Join(s.root, stagingDir)); err != nil {
		add("staging: %v", err)
	} else {
		for _, e := range ents {
			add("leftover in staging: %s", e.Name())
		}
	}
	own := s.checkFUSE(live, add)
	mps, err := overlay.MountsUnder(s.root)
	if err != nil {
		add("mountinfo: %v", err)
	}
	for _, mp := range mps {
		if !own[mp] {
			add("leaked mount at %s", mp)
		}
	}
	if len(problems) > 0 {
		return fmt.Errorf("check %s: %w:\n  %s", s.root, ErrInconsistent, strings.Join(problems, "\n  "))
	}
	return nil
}
