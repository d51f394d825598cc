package overlay

import (
	"fmt"
	"os"
	"path"

	"golang.org/x/sys/unix"
)

// Remove deletes the union object at p, with the semantics of unlink(2)
// for non-directories and rmdir(2) for directories: a directory must be
// empty in the merged view (unix.ENOTEMPTY otherwise; whiteouts do not
// count). The upper object, if any, goes away; when a lower layer still
// holds the name, a kernel whiteout (char 0/0) takes its place. Each step
// is atomic: the whiteout is made in the work dir and renamed over the
// name (exchanged with a directory, which is then deleted from the work
// dir), so the name never shows the lower object in between.
func (s *Stack) Remove(p string) error {
	if s.upper == "" {
		return s.errReadOnly("remove", p)
	}
	c, err := cleanPath(p)
	if err != nil {
		return err
	}
	if c == "." {
		return &os.PathError{Op: "overlay remove", Path: c, Err: unix.EBUSY}
	}
	parent, name := path.Dir(c), path.Base(c)
	e, err := s.Lookup(c)
	if err != nil {
		return err
	}
	if !s.isUpper(e.Layer) && parent != "." {
		// The whiteout needs the parent in the upper layer.
		if _, err := s.CopyUp(parent); err != nil {
			return err
		}
	}
	unlock := s.state.locks.lock(c)
	defer unlock()
	pd, err := s.LookupDir(parent)
	if err != nil {
		return err
	}
	if e, err = s.LookupIn(pd, name); err != nil {
		return err
	}
	if e.Dir != nil {
		ents, err := s.ReadDirOf(e.Dir)
		if err != nil {
			return err
		}
		if len(ents) > 0 {
			return &os.PathError{Op: "overlay remove", Path: c, Err: unix.ENOTEMPTY}
		}
	}
	lower, err := s.HasLower(pd, name)
	if err != nil {
		return err
	}
	if err := s.removeLocked(e, lower); err != nil {
		return fmt.Errorf("overlay: remove %q: %w", c, err)
	}
	return nil
}

// removeLocked removes e from the upper layer, leaving a whiteout when
// whiteout is set.
//
// Preconditions: s.state.locks holds e.Path; e's parent is in the upper.
func (s *Stack) removeLocked(e *Entry, whiteout bool) error {
	dst := s.upper + "/" + e.Path
	inUpper := s.isUpper(e.Layer)
	isDir := e.Dir != nil
	if !whiteout {
		if !inUpper {
			return nil // nothing to do: served by a lower but HasLower says none
		}
		if !isDir {
			if err := unix.Unlink(dst); err != nil {
				return &os.PathError{Op: "unlink", Path: dst, Err: err}
			}
			return nil
		}
		err := unix.Rmdir(dst)
		if err != unix.ENOTEMPTY && err != unix.EEXIST {
			if err != nil {
				return &os.PathError{Op: "rmdir", Path: dst, Err: err}
			}
			return nil
		}
		// The upper dir still holds whiteouts: move it out atomically,
		// then delete it in the work dir.
		tmp, err := s.tmpPath()
		if err != nil {
			return err
		}
		if err := unix.Rename(dst, tmp); err != nil {
			return &os.LinkError{Op: "rename", Old: dst, New: tmp, Err: err}
		}
		return os.RemoveAll(tmp)
	}
	tmp, err := s.tmpPath()
	if err != nil {
		return err
	}
	if err := MakeWhiteout(path.Dir(tmp), path.Base(tmp)); err != nil {
		return err
	}
	switch {
	case !inUpper:
		err = renameNoReplace(tmp, dst)
	case isDir:
		err = unix.Renameat2(unix.AT_FDCWD, tmp, unix.AT_FDCWD, dst, unix.RENAME_EXCHANGE)
	default:
		err = unix.Rename(tmp, dst)
	}
	if err != nil {
		_ = os.Remove(tmp) // best effort: the rename error is the one to report
		return &os.LinkError{Op: "rename whiteout", Old: tmp, New: dst, Err: err}
	}
	if isDir && inUpper {
		return os.RemoveAll(tmp) // the old upper dir, now in the work dir
	}
	return nil
}
