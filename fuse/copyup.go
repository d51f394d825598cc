package fuse

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"strconv"
	"strings"
	"sync/atomic"
	"unsafe"

	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

	"github.com/stratafs/strata/overlay"
)

// copyUp copies one object to the upper layer at the union path rel: meta
// is where its metadata lives (a lower path, or the upper path of a
// metadata-only copy), data where a regular file's bytes live. The copy is
// built in the work dir and renamed into place, so a crash leaves either
// nothing or the whole object. The parent of rel must already be in the
// upper layer. origin, if set, is recorded as the kernel does. metaOnly
// makes a regular file a metadata-only copy in the kernel's metacopy
// format (sparse file of the same size with the "metacopy" xattr; its
// data stays below), other types are copied whole.
//
// impure, if not nil, is the parent's "known impure" flag: the parent is
// marked impure only while the flag is unset.
//
// Preconditions: u.cuMu is held.
func (u *union) copyUp(rel, meta, data string, origin *lref, replace, metaOnly bool, impure *atomic.Bool) (err error) {
	var st unix.Stat_t
	if err := lstat(meta, &st); err != nil {
		return &os.PathError{Op: "copy-up lstat", Path: meta, Err: err}
	}
	tmp := u.tmpName()
	defer func() {
		if err != nil {
			os.RemoveAll(tmp)
		}
	}()
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFDIR:
		if err := unix.Mkdir(tmp, 0o700); err != nil {
			return &os.PathError{Op: "copy-up mkdir", Path: tmp, Err: err}
		}
	case unix.S_IFREG:
		if metaOnly {
			if err := makeMetacopy(tmp, st.Size); err != nil {
				return err
			}
			break
		}
		if err := u.copyData(tmp, data, st.Size); err != nil {
			return err
		}
	case unix.S_IFLNK:
		target, err := readlink(meta)
		if err != nil {
			return &os.PathError{Op: "copy-up readlink", Path: meta, Err: err}
		}
		if err := unix.Symlink(target, tmp); err != nil {
			return &os.PathError{Op: "copy-up symlink", Path: tmp, Err: err}
		}
	default:
		if err := unix.Mknod(tmp, st.Mode, int(st.Rdev)); err != nil {
			return &os.PathError{Op: "copy-up mknod", Path: tmp, Err: err}
		}
	}
	if err := u.copyMeta(meta, tmp, &st, origin); err != nil {
		return err
	}
	if metaOnly && st.Mode&unix.S_IFMT == unix.S_IFREG {
		// after copyMeta, which drops overlay's xattrs of the source
		if err := unix.Lsetxattr(tmp, u.format.Xattr(overlay.XattrMetacopy), nil, 0); err != nil {
			return &os.PathError{Op: "copy-up set metacopy", Path: tmp, Err: err}
		}
	}
	dst, done, err := u.safeUpper(rel)
	if err != nil {
		return err
	}
	defer done()
	// linking the copy in changes the parent's times; the union shows
	// them unchanged (as the kernel restores them), so put them back.
	// (path.Dir(dst) may be a /proc magic link: follow it.)
	var pst unix.Stat_t
	if err := unix.Stat(path.Dir(dst), &pst); err != nil {
		return &os.PathError{Op: "copy-up lstat parent", Path: path.Dir(dst), Err: err}
	}
	defer func() {
		if err == nil {
			ts := []unix.Timespec{pst.Atim, pst.Mtim}
			err = unix.UtimesNanoAt(unix.AT_FDCWD, path.Dir(dst), ts, 0)
		}
	}()
	flags := uint(unix.RENAME_NOREPLACE)
	if replace {
		flags = 0
	}
	if err := unix.Renameat2(unix.AT_FDCWD, tmp, unix.AT_FDCWD, dst, flags); err != nil {
		return &os.PathError{Op: "copy-up rename", Path: dst, Err: err}
	}
	if origin != nil && (impure == nil || !impure.Load()) {
		if err := u.markImpure(path.Dir(dst)); err != nil {
			return err
		}
		if impure != nil {
			impure.Store(true)
		}
	}
	return nil
}

// makeMetacopy creates p as an empty file of size bytes (all hole).
func makeMetacopy(p string, size int64) error {
	fd, err := unix.Open(p, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return &os.PathError{Op: "copy-up create", Path: p, Err: err}
	}
	defer unix.Close(fd)
	if err := unix.Ftruncate(fd, size); err != nil {
		return &os.PathError{Op: "copy-up truncate", Path: p, Err: err}
	}
	return nil
}

// markImpure sets the overlay "impure" xattr on the upper dir dir, as the
// kernel does on a dir that holds copied-up or redirected entries: its
// readdir then reports their union inode numbers in d_ino. dir may be a
// /proc magic link (it is followed).
func (u *union) markImpure(dir string) error {
	name := u.format.Xattr(overlay.XattrImpure)
	if _, err := unix.Getxattr(dir, name, nil); err == nil {
		return nil
	}
	if err := unix.Setxattr(dir, name, []byte("y"), 0); err != nil && !errors.Is(err, unix.EOPNOTSUPP) {
		return &os.PathError{Op: "set impure", Path: dir, Err: err}
	}
	return nil
}

// copyMeta copies xattrs (all but overlay's own), owner, mode and times of
// the object described by st at src onto dst, and records origin. The
// owner is set first: chown clears file capabilities (security.capability)
// and set-id bits, which the copy must keep, as the kernel's copy-up does.
func (u *union) copyMeta(src, dst string, st *unix.Stat_t, origin *lref) error {
	if err := unix.Lchown(dst, int(st.Uid), int(st.Gid)); err != nil {
		return &os.PathError{Op: "copy-up chown", Path: dst, Err: err}
	}
	keep := func(name string) bool {
		// a metacopy's own origin moves with it
		return !overlay.IsOverlayXattr(name) || name == u.format.Xattr(overlay.XattrOrigin) && origin == nil
	}
	err := copyXattrs(src, keep, func(name string, v []byte) error {
		if err := unix.Lsetxattr(dst, name, v, 0); err != nil {
			return &os.PathError{Op: "copy-up setxattr " + name, Path: dst, Err: err}
		}
		return nil
	})
	if err != nil {
		return err
	}
	if origin != nil {
		if fh := u.encodeOrigin(*origin); fh != nil {
			if err := unix.Lsetxattr(dst, u.format.Xattr(overlay.XattrOrigin), fh, 0); err != nil &&
				!errors.Is(err, unix.EOPNOTSUPP) {
				return &os.PathError{Op: "copy-up set origin", Path: dst, Err: err}
			}
		}
	}
	if st.Mode&unix.S_IFMT != unix.S_IFLNK {
		// after chown, which clears set-id bits
		if err := unix.Chmod(dst, st.Mode&0o7777); err != nil {
			return &os.PathError{Op: "copy-up chmod", Path: dst, Err: err}
		}
	}
	ts := []unix.Timespec{st.Atim, st.Mtim}
	if err := unix.UtimesNanoAt(unix.AT_FDCWD, dst, ts, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return &os.PathError{Op: "copy-up utimes", Path: dst, Err: err}
	}
	return nil
}

// copyData creates dst with the bytes of src, preserving holes: reflink
// if the filesystem can, else copy_file_range over the data extents only.
func (u *union) copyData(dst, src string, size int64) error {
	in, err := os.Open(src)
	if err != nil {
		return fmt.Errorf("copy-up open %s: %w", src, err)
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("copy-up create %s: %w", dst, err)
	}
	defer out.Close()
	if err := unix.IoctlFileClone(int(out.Fd()), int(in.Fd())); err == nil {
		return nil
	}
	ifd, ofd := int(in.Fd()), int(out.Fd())
	var off int64
	for off < size {
		data, err := unix.Seek(ifd, off, unix.SEEK_DATA)
		if errors.Is(err, unix.ENXIO) {
			break // only a hole remains
		}
		if err != nil {
			return fmt.Errorf("copy-up seek data %s: %w", src, err)
		}
		hole, err := unix.Seek(ifd, data, unix.SEEK_HOLE)
		if err != nil {
			return fmt.Errorf("copy-up seek hole %s: %w", src, err)
		}
		if err := copyRange(ifd, ofd, data, hole-data); err != nil {
			return fmt.Errorf("copy-up %s: %w", src, err)
		}
		off = hole
	}
	if err := out.Truncate(size); err != nil {
		return fmt.Errorf("copy-up truncate %s: %w", dst, err)
	}
	if !u.volatile {
		if err := out.Sync(); err != nil {
			return fmt.Errorf("copy-up fsync %s: %w", dst, err)
		}
	}
	return out.Close()
}

// copyRange copies n bytes at off from ifd to ofd at the same offset.
func copyRange(ifd, ofd int, off, n int64) error {
	ioff, ooff := off, off
	for n > 0 {
		c, err := unix.CopyFileRange(ifd, &ioff, ofd, &ooff, int(min(n, 1<<30)), 0)
		if err != nil {
			if errors.Is(err, unix.EXDEV) || errors.Is(err, unix.ENOSYS) || errors.Is(err, unix.EINVAL) || errors.Is(err, unix.EOPNOTSUPP) {
				return copySlow(ifd, ofd, ioff, n)
			}
			return err
		}
		if c == 0 {
			return io.ErrUnexpectedEOF
		}
		n -= int64(c)
	}
	return nil
}

func copySlow(ifd, ofd int, off, n int64) error {
	buf := make([]byte, 1<<20)
	for n > 0 {
		c, err := unix.Pread(ifd, buf[:min(int64(len(buf)), n)], off)
		if err != nil {
			return err
		}
		if c == 0 {
			return io.ErrUnexpectedEOF
		}
		if _, err := unix.Pwrite(ofd, buf[:c], off); err != nil {
			return err
		}
		off += int64(c)
		n -= int64(c)
	}
	return nil
}

func readlink(p string) (string, error) {
	buf := make([]byte, 256)
	for {
		n, err := unix.Readlink(p, buf)
		if err != nil {
			return "", err
		}
		if n < len(buf) {
			return string(buf[:n]), nil
		}
		buf = make([]byte, 2*len(buf))
	}
}

func listxattr(p string) ([]string, error) {
	sz, err := unix.Llistxattr(p, nil)
	if err != nil {
		if errors.Is(err, unix.ENOTSUP) {
			return nil, nil
		}
		return nil, err
	}
	if sz == 0 {
		return nil, nil
	}
	buf := make([]byte, sz)
	sz, err = unix.Llistxattr(p, buf)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, n := range strings.Split(string(buf[:sz]), "\x00") {
		if n != "" {
			out = append(out, n)
		}
	}
	return out, nil
}

// replaceWithWhiteout atomically replaces the upper object at p with a
// whiteout, removing the old object (a dir with only whiteouts in it, or
// a non-dir) afterwards.
//
// Preconditions: u.cuMu is held.
func (u *union) replaceWithWhiteout(p string, isDir bool) error {
	tmp := u.tmpName()
	if err := overlay.MakeWhiteout(path.Dir(tmp), path.Base(tmp)); err != nil {
		return err
	}
	if isDir {
		if err := unix.Renameat2(unix.AT_FDCWD, tmp, unix.AT_FDCWD, p, unix.RENAME_EXCHANGE); err != nil {
			os.Remove(tmp)
			return &os.PathError{Op: "exchange with whiteout", Path: p, Err: err}
		}
		return os.RemoveAll(tmp)
	}
	if err := unix.Rename(tmp, p); err != nil {
		os.Remove(tmp)
		return &os.PathError{Op: "replace with whiteout", Path: p, Err: err}
	}
	return nil
}

// removeUpperDir removes an upper dir whose merged view is empty: it may
// still hold whiteouts. It is moved to the work dir first, so the name
// disappears atomically.
func (u *union) removeUpperDir(p string) error {
	tmp := u.tmpName()
	if err := unix.Rename(p, tmp); err != nil {
		return &os.PathError{Op: "rmdir", Path: p, Err: err}
	}
	return os.RemoveAll(tmp)
}

// metacopyUp writes a metadata-only copy (kernel metacopy format) of the
// lower regular file meta as name in the upper dir dfd, with the changes
// of the SETATTR in (mode, owner, times; no size) applied while it is
// built, so that the result needs no second pass. Everything is done on
// descriptors: the copy is created in the work dir with openat, given its
// owner, xattrs (the lower's, origin, metacopy), mode and times through
// its fd, and renamed into dfd; the parent's times are put back through
// dfd. A metadata-only copy holds no data, so, as with the kernel, there
// is nothing to fsync. out gets the copy's attributes (st_blocks are the
// data's, as the kernel reports them).
//
// The order matters: chown clears set-id bits and file capabilities, so
// the copy's own owner is set before the xattrs are copied, and a chown
// the SETATTR asks for comes after the chmod and the xattrs, as it would
// on a copy made first and changed second.
//
// Preconditions: u.cuMu is held; dfd is the upper parent (upperDirFd).
func (u *union) metacopyUp(dfd int, name, meta, data string, origin lref, in *fuse.SetAttrIn, impure *atomic.Bool, out *unix.Stat_t) (err error) {
	var st unix.Stat_t
	if err := lstat(meta, &st); err != nil {
		return &os.PathError{Op: "copy-up lstat", Path: meta, Err: err}
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return &os.PathError{Op: "metacopy", Path: meta, Err: unix.EINVAL}
	}
	tmp := u.tmpBase()
	fd, err := unix.Openat(u.workFd, tmp, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return &os.PathError{Op: "copy-up create", Path: path.Join(u.work, tmp), Err: err}
	}
	linked := false
	defer func() {
		_ = unix.Close(fd) // nothing written through it: no data to lose
		if err != nil && !linked {
			_ = unix.Unlinkat(u.workFd, tmp, 0) // best effort: cleanWork removes leftovers
		}
	}()
	fail := func(op string, err error) error {
		return &os.PathError{Op: "copy-up " + op, Path: path.Join(u.work, tmp), Err: err}
	}
	if st.Size > 0 {
		if err := unix.Ftruncate(fd, st.Size); err != nil {
			return fail("truncate", err)
		}
	}
	uid, uok := in.GetUID()
	gid, gok := in.GetGID()
	chown := uok || gok
	if st.Uid != u.created.uid || st.Gid != u.created.gid {
		if err := unix.Fchown(fd, int(st.Uid), int(st.Gid)); err != nil {
			return fail("chown", err)
		}
	}
	if err := u.copyXattrsFd(meta, fd); err != nil {
		return err
	}
	if fh := u.encodeOrigin(origin); fh != nil {
		if err := unix.Fsetxattr(fd, u.format.Xattr(overlay.XattrOrigin), fh, 0); err != nil && !errors.Is(err, unix.EOPNOTSUPP) {
			return fail("set origin", err)
		}
	}
	if err := unix.Fsetxattr(fd, u.format.Xattr(overlay.XattrMetacopy), nil, 0); err != nil {
		return fail("set metacopy", err)
	}
	mode := st.Mode & 0o7777
	if m, ok := in.GetMode(); ok {
		mode = m & 0o7777
	}
	if err := unix.Fchmod(fd, mode); err != nil {
		return fail("chmod", err)
	}
	if chown {
		su, sg := int(st.Uid), int(st.Gid)
		if uok {
			su = int(uid)
		}
		if gok {
			sg = int(gid)
		}
		if err := unix.Fchown(fd, su, sg); err != nil {
			return fail("chown", err)
		}
	}
	ts := setattrTimes(in)
	if ts[0].Nsec == unix.UTIME_OMIT {
		ts[0] = st.Atim
	}
	if ts[1].Nsec == unix.UTIME_OMIT {
		ts[1] = st.Mtim
	}
	if err := futimens(fd, &ts); err != nil {
		return fail("utimes", err)
	}
	// linking the copy in changes the parent's times; the union shows
	// them unchanged (as the kernel restores them), so put them back
	var pst unix.Stat_t
	if err := unix.Fstat(dfd, &pst); err != nil {
		return &os.PathError{Op: "copy-up stat parent", Path: name, Err: err}
	}
	if err := unix.Renameat2(u.workFd, tmp, dfd, name, unix.RENAME_NOREPLACE); err != nil {
		return &os.PathError{Op: "copy-up rename", Path: name, Err: err}
	}
	linked = true
	if err := dirFdTimes(dfd, &[2]unix.Timespec{pst.Atim, pst.Mtim}); err != nil {
		return &os.PathError{Op: "copy-up restore parent times", Path: name, Err: err}
	}
	if impure == nil || !impure.Load() {
		if err := u.markImpureFd(dfd); err != nil {
			return err
		}
		if impure != nil {
			impure.Store(true)
		}
	}
	blocks := st.Blocks
	if data != meta {
		var dst unix.Stat_t
		if lstat(data, &dst) == nil {
			blocks = dst.Blocks
		}
	}
	if err := unix.Fstat(fd, out); err != nil {
		return &os.PathError{Op: "copy-up fstat", Path: name, Err: err}
	}
	out.Blocks = blocks
	return nil
}

// futimens sets the times of the open file fd (utimensat(fd, NULL, ts, 0)).
func futimens(fd int, ts *[2]unix.Timespec) error {
	// x/sys wraps utimensat only with a path; a NULL path is futimens
	if _, _, e := unix.Syscall6(unix.SYS_UTIMENSAT, uintptr(fd), 0, uintptr(unsafe.Pointer(&ts[0])), 0, 0, 0); e != 0 { //nolint:gosec // a pointer to the caller's array, valid for the call
		return e
	}
	return nil
}

// copyXattrsFd copies the xattrs of src (all but overlay's own) onto the
// open file fd.
func (u *union) copyXattrsFd(src string, fd int) error {
	keep := func(name string) bool { return !overlay.IsOverlayXattr(name) }
	return copyXattrs(src, keep, func(name string, v []byte) error {
		if err := unix.Fsetxattr(fd, name, v, 0); err != nil {
			return &os.PathError{Op: "copy-up setxattr " + name, Path: src, Err: err}
		}
		return nil
	})
}

// copyXattrs lists the xattrs of src and passes those keep accepts, with
// their values, to set.
func copyXattrs(src string, keep func(name string) bool, set func(name string, v []byte) error) error {
	names, err := listxattr(src)
	if err != nil {
		return &os.PathError{Op: "copy-up listxattr", Path: src, Err: err}
	}
	for _, name := range names {
		if !keep(name) {
			continue
		}
		v, ok, err := getxattr(src, name)
		if err != nil {
			return &os.PathError{Op: "copy-up getxattr " + name, Path: src, Err: err}
		}
		if !ok {
			continue
		}
		if err := set(name, []byte(v)); err != nil {
			return err
		}
	}
	return nil
}

// markImpureFd is markImpure on an open dir fd (through /proc for an
// O_PATH fd).
func (u *union) markImpureFd(dfd int) error {
	name := u.format.Xattr(overlay.XattrImpure)
	_, err := unix.Fgetxattr(dfd, name, nil)
	if errors.Is(err, unix.EBADF) {
		return u.markImpure("/proc/self/fd/" + strconv.Itoa(dfd))
	}
	if err == nil {
		return nil
	}
	if err := unix.Fsetxattr(dfd, name, []byte("y"), 0); err != nil && !errors.Is(err, unix.EOPNOTSUPP) {
		return fmt.Errorf("set impure on upper dir: %w", err)
	}
	return nil
}
