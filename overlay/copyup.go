package overlay

import (
	"errors"
	"fmt"
	"os"
	"path"
	"strconv"
	"sync"

	"golang.org/x/sys/unix"
)

// WithVolatile makes copy-up skip the fsync of file data before the rename
// into place (the kernel's "volatile" option): faster, but after a crash a
// copied-up file may be present with incomplete data.
func WithVolatile() StackOption {
	return func(s *Stack) { s.volatile = true }
}

// workTmpDir is the subdirectory of the work dir holding objects under
// construction. It is the kernel's own scratch dir ("work"), which kernel
// overlayfs empties on every mount, so leftovers of a crash vanish with the
// next kernel mount or CleanWork.
const workTmpDir = "work"

// tmpPrefix starts the names of strata's temporaries in the work dir.
const tmpPrefix = "#strata."

// testHookBeforeRename, when set by a test, runs before a copy-up is
// renamed into place; an error aborts the copy-up (crash simulation).
var testHookBeforeRename func(tmp string) error

// pathLocks serializes copy-up and removal per union path.
type pathLocks struct {
	mu sync.Mutex // guards m
	m  map[string]*pathLock
}

type pathLock struct {
	mu   sync.Mutex
	refs int // protected by pathLocks.mu
}

// lock locks the union path p and returns its unlock function.
func (l *pathLocks) lock(p string) func() {
	l.mu.Lock()
	if l.m == nil {
		l.m = make(map[string]*pathLock)
	}
	pl := l.m[p]
	if pl == nil {
		pl = &pathLock{}
		l.m[p] = pl
	}
	pl.refs++
	l.mu.Unlock()
	pl.mu.Lock()
	return func() {
		pl.mu.Unlock()
		l.mu.Lock()
		if pl.refs--; pl.refs == 0 {
			delete(l.m, p)
		}
		l.mu.Unlock()
	}
}

// errReadOnly is returned by writes to a stack without upper layer.
func (s *Stack) errReadOnly(op, p string) error {
	return &os.PathError{Op: "overlay " + op, Path: p, Err: unix.EROFS}
}

// tmpPath returns a fresh path in the work dir's scratch subdir, creating
// that subdir on first use.
func (s *Stack) tmpPath() (string, error) {
	dir := s.work + "/" + workTmpDir
	if !s.state.workDir.Load() {
		if err := unix.Mkdir(dir, 0o700); err != nil && err != unix.EEXIST {
			return "", &os.PathError{Op: "overlay mkdir", Path: dir, Err: err}
		}
		s.state.workDir.Store(true)
	}
	n := s.state.tmpSeq.Add(1)
	return dir + "/" + tmpPrefix + strconv.Itoa(os.Getpid()) + "." + strconv.FormatUint(n, 10), nil
}

// CleanWork removes strata's leftover temporaries from the work dir (what
// a crash in the middle of a copy-up or Remove leaves behind). Call it
// before using the stack, never while copy-ups run.
func (s *Stack) CleanWork() error {
	if s.work == "" {
		return nil
	}
	dir := s.work + "/" + workTmpDir
	ents, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("overlay: clean work dir: %w", err)
	}
	for _, e := range ents {
		if len(e.Name()) >= len(tmpPrefix) && e.Name()[:len(tmpPrefix)] == tmpPrefix {
			if err := os.RemoveAll(dir + "/" + e.Name()); err != nil {
				return fmt.Errorf("overlay: clean work dir: %w", err)
			}
		}
	}
	return nil
}

// CopyUp makes sure the object at union path p lives in the upper layer
// and returns its entry there. Parents are copied up first, each with its
// mode, owner, times and xattrs (overlay's own xattrs are never copied).
// Directories are copied empty (their union contents stay in the lowers);
// regular files with their data (FICLONE where the fs supports it, else
// copy_file_range over the data extents only, so holes stay holes) and
// fsync'd unless the stack is volatile; symlinks, fifos, sockets and
// devices as they are. Mode, owner, atime/mtime (ns) and xattrs are kept,
// and the parent's times are restored, as the kernel does.
//
// Each object is built under a temp name in the work dir and renamed into
// place, so a crash leaves either nothing or the whole copy in the upper
// layer. A metacopy file in the upper layer gets its data (a full copy
// replaces it). Concurrent CopyUps of one path are serialized; the losers
// return the winner's copy.
//
// Hard links: like the kernel with index=off, copy-up breaks the link;
// each name copied up becomes an independent file.
func (s *Stack) CopyUp(p string) (*Entry, error) { return s.copyUp(p, false) }

// CopyUpMeta is CopyUp for a metadata change (chmod, chown, utimes,
// setxattr) of a regular file: like the kernel with metacopy=on, it copies
// only the metadata into an upper file of the right size with no data
// blocks, marked with the overlay "metacopy" xattr; reads keep coming from
// the lower data (Entry.DataPath) until a CopyUp for a write. Other file
// types, and objects already in the upper layer, behave as in CopyUp. The
// metacopy format needs trusted.overlay xattrs: with WithUserXattr,
// CopyUpMeta fails with ErrNotSupported, as the kernel refuses
// metacopy=on with userxattr.
func (s *Stack) CopyUpMeta(p string) (*Entry, error) {
	if s.format.UserXattr {
		return nil, fmt.Errorf("overlay: metadata copy-up %q with userxattr: %w", p, ErrNotSupported)
	}
	return s.copyUp(p, true)
}

func (s *Stack) copyUp(p string, meta bool) (*Entry, error) {
	if s.upper == "" {
		return nil, s.errReadOnly("copy-up", p)
	}
	c, err := cleanPath(p)
	if err != nil {
		return nil, err
	}
	done := func(e *Entry) bool { return s.isUpper(e.Layer) && (!e.Metacopy || meta) }
	e, err := s.Lookup(c)
	if err != nil || done(e) {
		return e, err // the root is always in the upper layer
	}
	// Parents first. A Dir whose top layer is the upper stays valid for
	// what follows: nothing in this package moves an upper dir.
	pd := e.Parent
	if !s.isUpper(pd.Layers[0].Index) {
		pe, err := s.copyUp(pd.Path, false)
		if err != nil {
			return nil, err
		}
		if pd = pe.Dir; pd == nil {
			return nil, &os.PathError{Op: "overlay copy-up", Path: pe.Path, Err: unix.ENOTDIR}
		}
	}
	name := path.Base(c)
	unlock := s.state.locks.lock(c)
	defer unlock()
	// Look again under the lock: another goroutine may have won.
	if e, err = s.LookupIn(pd, name); err != nil || done(e) {
		return e, err
	}
	if err := s.copyObjectLocked(e, meta); err != nil {
		return nil, fmt.Errorf("overlay: copy-up %q: %w", c, err)
	}
	return s.LookupIn(pd, name)
}

// copyObjectLocked copies the object of e into the upper layer, whose
// parent dir must exist; with meta, a regular file becomes a metacopy.
//
// Preconditions: s.state.locks holds e.Path.
func (s *Stack) copyObjectLocked(e *Entry, meta bool) (err error) {
	dst := s.upper + "/" + e.Path
	parent := path.Dir(dst)
	var pst unix.Stat_t
	if err := unix.Lstat(parent, &pst); err != nil {
		return &os.PathError{Op: "lstat", Path: parent, Err: err}
	}
	tmp, err := s.tmpPath()
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			_ = os.RemoveAll(tmp) // best effort: the error returned is err
		}
	}()
	st := &e.Stat
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFREG:
		if meta {
			err = makeMetacopy(tmp, st.Size, s.format.Xattr(XattrMetacopy))
		} else {
			err = s.copyFileData(e.DataPath, tmp)
		}
	case unix.S_IFDIR:
		err = unix.Mkdir(tmp, 0o700)
	case unix.S_IFLNK:
		var target string
		if target, err = os.Readlink(e.RealPath); err == nil {
			err = unix.Symlink(target, tmp)
		}
	default: // fifo, socket, char and block devices
		err = unix.Mknod(tmp, st.Mode, int(st.Rdev)) //nolint:gosec // a dev_t fits int on 64-bit Linux
	}
	if err != nil {
		return fmt.Errorf("create %s: %w", tmp, err)
	}
	if err := copyMeta(e.RealPath, tmp, st); err != nil {
		return err
	}
	if testHookBeforeRename != nil {
		if err := testHookBeforeRename(tmp); err != nil {
			return err
		}
	}
	if s.isUpper(e.Layer) {
		// A metacopy upper file: replace it with the full copy.
		err = unix.Rename(tmp, dst)
	} else {
		err = renameNoReplace(tmp, dst)
	}
	if err == unix.EEXIST {
		// Someone outside this Stack made the name meanwhile; theirs wins.
		_ = os.RemoveAll(tmp) // best effort: the object is in place, a stray tmp is harmless
		return nil
	}
	if err != nil {
		return &os.LinkError{Op: "rename", Old: tmp, New: dst, Err: err}
	}
	ts := []unix.Timespec{pst.Atim, pst.Mtim}
	if err := unix.UtimesNanoAt(unix.AT_FDCWD, parent, ts, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return &os.PathError{Op: "utimensat", Path: parent, Err: err}
	}
	return nil
}

// makeMetacopy creates p as a data-less file of size bytes marked with the
// metacopy xattr xname (empty value: no digest, as the kernel accepts).
func makeMetacopy(p string, size int64, xname string) error {
	fd, err := unix.Open(p, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return err
	}
	if err := unix.Ftruncate(fd, size); err != nil {
		_ = unix.Close(fd)
		return err
	}
	if err := unix.Fsetxattr(fd, xname, nil, 0); err != nil {
		_ = unix.Close(fd)
		return err
	}
	return unix.Close(fd)
}

// renameNoReplace renames old to new unless new exists (EEXIST). Where the
// fs lacks RENAME_NOREPLACE it falls back to link+unlink for non-dirs and
// to a plain rename for dirs (which fails on a non-empty target).
func renameNoReplace(old, new string) error {
	err := unix.Renameat2(unix.AT_FDCWD, old, unix.AT_FDCWD, new, unix.RENAME_NOREPLACE)
	if err != unix.EINVAL && err != unix.ENOSYS {
		return err
	}
	var st unix.Stat_t
	if err := unix.Lstat(old, &st); err != nil {
		return err
	}
	if st.Mode&unix.S_IFMT == unix.S_IFDIR {
		return unix.Rename(old, new)
	}
	if err := unix.Link(old, new); err != nil {
		return err
	}
	return unix.Unlink(old)
}

// copyMeta gives dst the owner, mode, xattrs (but overlay's) and times of
// src, whose lstat is st. Order matters: chown clears setuid bits and
// security.capability, so chmod and xattrs follow it; times come last.
func copyMeta(src, dst string, st *unix.Stat_t) error {
	if err := unix.Lchown(dst, int(st.Uid), int(st.Gid)); err != nil {
		return &os.PathError{Op: "lchown", Path: dst, Err: err}
	}
	if st.Mode&unix.S_IFMT != unix.S_IFLNK {
		if err := unix.Chmod(dst, st.Mode&0o7777); err != nil {
			return &os.PathError{Op: "chmod", Path: dst, Err: err}
		}
	}
	if err := copyXattrs(src, dst); err != nil {
		return err
	}
	ts := []unix.Timespec{st.Atim, st.Mtim}
	if err := unix.UtimesNanoAt(unix.AT_FDCWD, dst, ts, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return &os.PathError{Op: "utimensat", Path: dst, Err: err}
	}
	return nil
}

// copyXattrs copies every xattr of src but overlay's own to dst.
func copyXattrs(src, dst string) error {
	names, err := listXattrs(src)
	if err != nil {
		return err
	}
	var buf []byte
	for _, name := range names {
		if IsOverlayXattr(name) {
			continue
		}
		v, err := getxattrBytes(src, name, &buf)
		if err != nil {
			return err
		}
		if err := unix.Lsetxattr(dst, name, v, 0); err != nil && !errors.Is(err, unix.ENOTSUP) {
			return &os.PathError{Op: "setxattr " + name, Path: dst, Err: err}
		}
	}
	return nil
}

func listXattrs(p string) ([]string, error) {
	var small [1024]byte
	buf := small[:]
	n, err := unix.Llistxattr(p, buf)
	if err == unix.ERANGE {
		if n, err = unix.Llistxattr(p, nil); err == nil {
			buf = make([]byte, n)
			n, err = unix.Llistxattr(p, buf)
		}
	}
	if err != nil {
		if errors.Is(err, unix.ENOTSUP) {
			return nil, nil
		}
		return nil, &os.PathError{Op: "listxattr", Path: p, Err: err}
	}
	var names []string
	start := 0
	for i := 0; i < n; i++ {
		if buf[i] == 0 {
			if i > start {
				names = append(names, string(buf[start:i]))
			}
			start = i + 1
		}
	}
	return names, nil
}

func getxattrBytes(p, name string, buf *[]byte) ([]byte, error) {
	for {
		if len(*buf) == 0 {
			*buf = make([]byte, 4096)
		}
		n, err := unix.Lgetxattr(p, name, *buf)
		if err == unix.ERANGE {
			if n, err = unix.Lgetxattr(p, name, nil); err != nil {
				return nil, &os.PathError{Op: "getxattr " + name, Path: p, Err: err}
			}
			*buf = make([]byte, n)
			continue
		}
		if err != nil {
			return nil, &os.PathError{Op: "getxattr " + name, Path: p, Err: err}
		}
		return (*buf)[:n], nil
	}
}

// copyFileData creates dst (O_EXCL) with the data of the regular file src:
// a reflink where the filesystems allow it (remembered per source device),
// else the data extents with copy_file_range (falling back to read/write),
// holes kept. It fsyncs dst unless the stack is volatile.
func (s *Stack) copyFileData(src, dst string) (err error) {
	ifd, err := unix.Open(src, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return &os.PathError{Op: "open", Path: src, Err: err}
	}
	defer closeFD(ifd)
	ofd, err := unix.Open(dst, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return &os.PathError{Op: "create", Path: dst, Err: err}
	}
	defer func() {
		if cerr := unix.Close(ofd); err == nil && cerr != nil {
			err = &os.PathError{Op: "close", Path: dst, Err: cerr}
		}
	}()
	var st unix.Stat_t
	if err := unix.Fstat(ifd, &st); err != nil {
		return &os.PathError{Op: "fstat", Path: src, Err: err}
	}
	cloned := false
	if _, no := s.state.noClone.Load(st.Dev); !no && st.Size > 0 {
		if err := unix.IoctlFileClone(ofd, ifd); err == nil {
			cloned = true
		} else if err == unix.EOPNOTSUPP || err == unix.ENOTTY || err == unix.EXDEV || err == unix.EINVAL {
			s.state.noClone.Store(st.Dev, true)
		}
	}
	if !cloned {
		sparse := st.Blocks*512 < st.Size
		if err := copyExtents(ifd, ofd, st.Size, sparse); err != nil {
			return fmt.Errorf("copy %s to %s: %w", src, dst, err)
		}
	}
	if !s.volatile {
		if err := unix.Fsync(ofd); err != nil {
			return &os.PathError{Op: "fsync", Path: dst, Err: err}
		}
	}
	return nil
}

// copyExtents copies the data extents of ifd (size bytes) to the same
// offsets of ofd and sizes ofd, leaving holes unallocated. Without sparse
// (the source has as many blocks as bytes) it copies everything at once.
func copyExtents(ifd, ofd int, size int64, sparse bool) error {
	if !sparse {
		// Fully allocated: one range, no SEEK_DATA round trips.
		return copyRange(ifd, ofd, 0, size)
	}
	for off := int64(0); off < size; {
		data, err := unix.Seek(ifd, off, unix.SEEK_DATA)
		if err == unix.ENXIO {
			break // only a hole remains
		}
		end := size
		if err != nil {
			data = off // no SEEK_DATA support: all data
		} else if hole, err := unix.Seek(ifd, data, unix.SEEK_HOLE); err == nil {
			end = hole
		}
		if end > size {
			end = size
		}
		if err := copyRange(ifd, ofd, data, end); err != nil {
			return err
		}
		off = end
	}
	return unix.Ftruncate(ofd, size)
}

// copyRange copies bytes [from, to) of ifd to ofd at the same offsets.
func copyRange(ifd, ofd int, from, to int64) error {
	roff, woff := from, from
	for roff < to {
		n, err := unix.CopyFileRange(ifd, &roff, ofd, &woff, int(min(to-roff, 1<<30)), 0)
		if err == unix.EINTR {
			continue
		}
		if err == unix.EXDEV || err == unix.EINVAL || err == unix.ENOSYS || err == unix.EOPNOTSUPP {
			return copyRangeRW(ifd, ofd, roff, to)
		}
		if err != nil {
			return fmt.Errorf("copy_file_range: %w", err)
		}
		if n == 0 {
			return nil // src shrank under us
		}
	}
	return nil
}

func copyRangeRW(ifd, ofd int, from, to int64) error {
	buf := make([]byte, 1<<20)
	for off := from; off < to; {
		n, err := unix.Pread(ifd, buf[:min(int64(len(buf)), to-off)], off)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return fmt.Errorf("pread: %w", err)
		}
		if n == 0 {
			return nil
		}
		for w := 0; w < n; {
			m, err := unix.Pwrite(ofd, buf[w:n], off+int64(w))
			if err == unix.EINTR {
				continue
			}
			if err != nil {
				return fmt.Errorf("pwrite: %w", err)
			}
			w += m
		}
		off += int64(n)
	}
	return nil
}
