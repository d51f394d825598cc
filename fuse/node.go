package fuse

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"os"
	"path"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

	"github.com/stratafs/strata/overlay"
)

// node is one inode of the union. Its union path is its place in the
// go-fuse tree (Inode.Path); where it lives in the layers is st.
//
// Lock order: union.cuMu before node.mu; never two node.mu at once.
type node struct {
	fs.Inode
	u    *union
	opts *Options

	mu          sync.Mutex // guards all below
	st          nodeState
	cachedOpens int // open handles not using passthrough
	// held: an open handle on the node's upper object, used for
	// SETATTR and GETATTR without a handle (the kernel sends none for
	// fchmod, fchown, futimens); cleared on its release.
	held *file
	// noCap: the object has no security.capability xattr (the kernel
	// asks on every first write and chown). Known for files created
	// here, and learnt on the first ask: xattrs change only through
	// this mount (Setxattr, Removexattr clear it).
	noCap    bool
	xattrGen uint64 // bumped before and after every xattr change

	// names: for a dir made through this mount (all its names were made
	// here too), a superset of the names in its upper dir: a name is
	// added before it is made and deleted only after it is gone, so a
	// name not in it does not exist (the negative LOOKUP before every
	// create is answered without a syscall). nil: unknown.
	names map[string]struct{}

	// impure: the node's upper dir is known to carry the "impure" xattr
	// (it moves with the dir on rename; nothing removes it).
	impure atomic.Bool

	// roPassthrough: on a mount without an upper layer, whether the
	// node's (immutable) file is big enough to be read through kernel
	// passthrough: 0 unknown, 1 yes, -1 no. Fixed once known, so the
	// opens of one inode never mix passthrough and cached io.
	roPassthrough atomic.Int32
}

// passthroughMin is the size from which a lower file on a read-only
// mount is read through kernel passthrough. Smaller files open lazily
// with no syscall (a warm open+read+close is two round trips and no
// server work), which beats passthrough's eager open and backing-file
// registration for the many small files of a tree walk.
const passthroughMin = 1 << 20

// readOnlyPassthrough reports whether a read-only open of the node's
// lower data should use kernel passthrough: only on a mount with no
// upper layer, where no copy-up can ever give the inode a second backing
// file (on a writable mount, a passthrough fd on the lower file would
// keep reading it after a copy-up, and the kernel keeps one backing file
// per inode: lower data is read through the server there).
func (n *node) readOnlyPassthrough(data string) bool {
	if n.u.upper != "" || n.opts.NoPassthrough {
		return false
	}
	switch n.roPassthrough.Load() {
	case 1:
		return true
	case -1:
		return false
	}
	var st unix.Stat_t
	if err := unix.Stat(data, &st); err != nil {
		return false // decide on a later open
	}
	v := int32(-1)
	if st.Size >= passthroughMin {
		v = 1
	}
	n.roPassthrough.CompareAndSwap(0, v)
	return n.roPassthrough.Load() == 1
}

// maxKnownNames bounds node.names; a bigger dir forgets its names.
const maxKnownNames = 1 << 17

// noteName records that name may exist in the node's upper dir.
func (n *node) noteName(name string) {
	n.mu.Lock()
	if n.names != nil {
		if len(n.names) >= maxKnownNames {
			n.names = nil
		} else {
			n.names[name] = struct{}{}
		}
	}
	n.mu.Unlock()
}

// forgetName records that name is gone from the node's upper dir.
func (n *node) forgetName(name string) {
	n.mu.Lock()
	if n.names != nil {
		delete(n.names, name)
	}
	n.mu.Unlock()
}

// knownAbsent reports whether name surely does not exist in the dir.
func (n *node) knownAbsent(name string) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.names == nil {
		return false
	}
	_, ok := n.names[name]
	return !ok
}

// parentImpure returns the impure flag of the node's parent, or nil.
func (n *node) parentImpure() *atomic.Bool {
	if _, p := n.Parent(); p != nil {
		if pn, ok := p.Operations().(*node); ok {
			return &pn.impure
		}
	}
	return nil
}

// xattrChanging forgets what is cached about the node's xattrs; called
// before and after a change, so that an answer read during the change is
// not cached.
func (n *node) xattrChanging() {
	n.mu.Lock()
	n.noCap = false
	n.xattrGen++
	n.mu.Unlock()
}

// nodeState says where a node lives in the layers.
type nodeState struct {
	upper    bool   // an upper object exists at the node's union path
	lowers   []lref // dirs: merged lower dirs; non-dirs: metadata/data below
	metacopy bool   // the top object is metadata-only; data is in lowers[last]
	// linked: a lower file with several hard links. Each of its names
	// gets its own inode (distinct StableAttr.Gen, same st_ino), so that a
	// copy-up breaks the link as kernel overlayfs with index=off does.
	linked bool
	// index: the name index of the merged lower dirs (dirs with two or
	// more lower dirs; built on the first lookup in the dir). Valid for
	// exactly lowers: whoever changes lowers clears it.
	index *overlay.DirIndex
}

func (n *node) state() nodeState {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.st
}

// setState replaces the node's state, keeping its index while the lower
// dirs stay the same (a repeated lookup of the same dir).
func (n *node) setState(s nodeState) {
	n.mu.Lock()
	if s.index == nil && n.st.index != nil && slices.Equal(n.st.lowers, s.lowers) {
		s.index = n.st.index
	}
	n.st = s
	n.mu.Unlock()
}

func (n *node) rel() string { return n.Path(n.Root()) }

// dirState returns what the node knows about its dir, with the lower
// name index, built here on first use.
func (n *node) dirState() dirState {
	s := n.state()
	d := dirState{upper: s.upper, lowers: s.lowers, index: s.index}
	if d.index == nil && len(d.lowers) >= indexMinLowers {
		idx, err := n.u.dirIndex(d.lowers)
		if err != nil {
			return d // the per-layer lstats still answer
		}
		n.mu.Lock()
		if slices.Equal(n.st.lowers, d.lowers) {
			n.st.index = idx
		}
		n.mu.Unlock()
		d.index = idx
	}
	return d
}

// metaPath is where the node's attributes live; dataPath where a regular
// file's bytes are read from.
func (n *node) paths() (meta, data string) {
	s := n.state()
	rel := n.rel()
	if s.upper {
		meta = n.u.upperPath(rel)
	} else if len(s.lowers) > 0 {
		meta = n.u.lowerPath(s.lowers[0])
	} else {
		meta = n.u.upperPath(rel)
	}
	data = meta
	if s.metacopy && len(s.lowers) > 0 {
		data = n.u.lowerPath(s.lowers[len(s.lowers)-1])
	}
	return meta, data
}

func errno(err error) syscall.Errno {
	if err == nil {
		return 0
	}
	return fs.ToErrno(err)
}

// lowerOnly reports whether an entry can never change behind the kernel's
// back through anything but this mount's own requests.
func (e *entry) lowerOnly() bool { return !e.upper }

func (n *node) fillAttr(st *unix.Stat_t, ino uint64, out *fuse.Attr) {
	out.FromStat(sysStat(st))
	out.Ino = ino
}

func (n *node) setEntryTimeouts(e *entry, out *fuse.EntryOut) {
	if e.lowerOnly() {
		out.SetEntryTimeout(n.opts.LowerTimeout)
		out.SetAttrTimeout(n.opts.LowerTimeout)
	} else {
		out.SetEntryTimeout(n.opts.EntryTimeout)
		out.SetAttrTimeout(n.opts.AttrTimeout)
	}
}

// newChild returns the inode for a looked-up or created entry, updating
// the state of an inode that already exists for the same inode number.
func (n *node) newChild(ctx context.Context, name string, e *entry, out *fuse.EntryOut) *fs.Inode {
	ch := &node{u: n.u, opts: n.opts}
	attr := fs.StableAttr{Mode: e.st.Mode & unix.S_IFMT, Ino: e.ino}
	linked := !e.upper && !e.isDir() && e.st.Nlink > 1
	if linked {
		h := fnv.New64a()
		h.Write([]byte(path.Join(n.rel(), name)))
		attr.Gen = h.Sum64() | 1
	}
	in := n.NewInode(ctx, ch, attr)
	if real, ok := in.Operations().(*node); ok {
		real.setState(nodeState{upper: e.upper, lowers: e.lowers, metacopy: e.metacopy, linked: linked})
	}
	n.fillAttr(&e.st, e.ino, &out.Attr)
	n.setEntryTimeouts(e, out)
	return in
}

var _ fs.NodeLookuper = (*node)(nil)

func (n *node) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	// ENOENT with no entry timeout set: go-fuse then answers with a
	// negative entry cached for Options.NegativeTimeout (fs/bridge.go turns
	// the error into a zero node id only when out's timeout is 0; setting
	// it here would send a plain ENOENT, which the kernel does not cache).
	if n.knownAbsent(name) {
		return nil, syscall.ENOENT
	}
	e, err := n.u.lookup(n.rel(), n.dirState(), name)
	if err != nil {
		return nil, errno(err)
	}
	return n.newChild(ctx, name, e, out), 0
}

var _ fs.NodeGetattrer = (*node)(nil)

func (n *node) Getattr(ctx context.Context, f fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	var st unix.Stat_t
	if ok, err := n.withHeldFd(func(fd int, _ bool) error { return unix.Fstat(fd, &st) }); ok && err == nil {
		n.fillAttr(&st, n.StableAttr().Ino, &out.Attr)
		out.SetTimeout(n.opts.AttrTimeout)
		return 0
	}
	meta, _ := n.paths()
	err := lstat(meta, &st)
	if err != nil {
		fh, ok := f.(*file)
		if !ok {
			return errno(err)
		}
		if errno := fh.ensure(); errno != 0 {
			return errno
		}
		if err := unix.Fstat(fh.fd, &st); err != nil {
			return errno(err)
		}
	}
	if s := n.state(); s.upper && s.metacopy && len(s.lowers) > 0 {
		// as the kernel: blocks of a metadata-only copy are its data's
		var dst unix.Stat_t
		if lstat(n.u.lowerPath(s.lowers[len(s.lowers)-1]), &dst) == nil {
			st.Blocks = dst.Blocks
		}
	}
	n.fillAttr(&st, n.StableAttr().Ino, &out.Attr)
	if n.state().upper {
		out.SetTimeout(n.opts.AttrTimeout)
	} else {
		out.SetTimeout(n.opts.LowerTimeout)
	}
	return 0
}

// copyUp brings the node (and its parents) into the upper layer, a
// metadata-only copy with its data.
func (n *node) copyUp() error { return n.copyUpNotify(false) }

// copyUpNotify is copyUp; when the copy breaks a lower hard link, the
// kernel is told to drop the name so that its next lookup finds the new
// inode. syncNotify may be set only where the kernel holds no lock on the
// parent dir (OPEN); elsewhere the notification is sent asynchronously.
func (n *node) copyUpNotify(syncNotify bool) error {
	if n.u.upper == "" {
		return unix.EROFS
	}
	if s := n.state(); s.upper && !s.metacopy {
		return nil
	}
	if _, parent := n.Parent(); parent != nil && !n.IsRoot() {
		if err := parent.Operations().(*node).copyUp(); err != nil {
			return err
		}
	}
	n.u.cuMu.Lock()
	defer n.u.cuMu.Unlock()
	s := n.state()
	if s.upper && !s.metacopy {
		return nil
	}
	rel := n.rel()
	if n.IsRoot() {
		return nil
	}
	var err error
	switch {
	case s.upper && s.metacopy:
		// full copy over the metadata-only one; it keeps its origin
		err = n.u.copyUp(rel, n.u.upperPath(rel), n.u.lowerPath(s.lowers[len(s.lowers)-1]), nil, true, false, nil)
	case len(s.lowers) > 0:
		meta, data := n.u.lowerPath(s.lowers[0]), n.u.lowerPath(s.lowers[len(s.lowers)-1])
		if !s.metacopy {
			data = meta
		}
		origin := s.lowers[0]
		err = n.u.copyUp(rel, meta, data, &origin, false, false, n.parentImpure())
		if errors.Is(err, unix.EEXIST) {
			err = nil // raced with an earlier copy-up
		}
	default:
		return unix.EIO
	}
	if err != nil {
		return err
	}
	n.mu.Lock()
	n.st.upper = true
	n.st.metacopy = false
	if n.StableAttr().Mode != unix.S_IFDIR && len(n.st.lowers) > 1 {
		n.st.lowers = n.st.lowers[:1]
	}
	linked := n.st.linked
	n.mu.Unlock()
	if linked {
		if name, parent := n.Parent(); parent != nil {
			if syncNotify {
				parent.NotifyEntry(name)
			} else {
				go parent.NotifyEntry(name)
			}
		}
	}
	return nil
}

// copyUpMeta brings the node into the upper layer for a change of its
// metadata only (chmod, chown, utimes, xattrs): a lower regular file gets
// a metadata-only copy in the kernel's metacopy format (as kernel
// overlayfs with metacopy=on), its data copied on the first open for
// write or truncate; other objects are copied whole (copyUp). Under
// userxattr the kernel refuses metacopy, so files are copied whole too.
func (n *node) copyUpMeta() error {
	if n.u.upper == "" {
		return unix.EROFS
	}
	if s := n.state(); s.upper || n.StableAttr().Mode != unix.S_IFREG || len(s.lowers) == 0 || n.u.format.UserXattr {
		if s.upper {
			return nil // a metadata-only copy stays one
		}
		return n.copyUp()
	}
	if _, parent := n.Parent(); parent != nil && !n.IsRoot() {
		if err := parent.Operations().(*node).copyUp(); err != nil {
			return err
		}
	}
	n.u.cuMu.Lock()
	defer n.u.cuMu.Unlock()
	s := n.state()
	if s.upper {
		return nil
	}
	rel := n.rel()
	meta, data := n.u.lowerPath(s.lowers[0]), n.u.lowerPath(s.lowers[len(s.lowers)-1])
	origin := s.lowers[0]
	err := n.u.copyUp(rel, meta, data, &origin, false, true, n.parentImpure())
	if errors.Is(err, unix.EEXIST) {
		err = nil // raced with an earlier copy-up
	}
	if err != nil {
		return err
	}
	n.becameMetacopy()
	return nil
}

// becameMetacopy records that the node now has a metadata-only upper
// copy (its data still in lowers[last]). A node of a lower hard-link group
// also has the kernel drop its entry (best effort: it times out anyway),
// as the copy broke the link.
func (n *node) becameMetacopy() {
	n.mu.Lock()
	n.st.upper = true
	n.st.metacopy = true
	linked := n.st.linked
	n.mu.Unlock()
	if linked {
		if name, parent := n.Parent(); parent != nil {
			go func() { _ = parent.NotifyEntry(name) }()
		}
	}
}

var _ fs.NodeSetattrer = (*node)(nil)

func (n *node) Setattr(ctx context.Context, f fs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	if done, err := n.setattrMetacopy(in, out); done {
		return errno(err)
	}
	cu := n.copyUpMeta
	if _, ok := in.GetSize(); ok {
		cu = n.copyUp
	}
	if err := cu(); err != nil {
		return errno(err)
	}
	if n.StableAttr().Mode == unix.S_IFREG {
		var st unix.Stat_t
		ok, err := n.withHeldFd(func(fd int, writable bool) error { return setattrFd(fd, writable, in, &st) })
		if ok && !errors.Is(err, errNeedPath) {
			if err != nil {
				return errno(err)
			}
			n.fillAttr(&st, n.StableAttr().Ino, &out.Attr)
			out.SetTimeout(n.opts.AttrTimeout)
			return 0
		}
	}
	// Work on an O_PATH fd of the object, reached without following
	// symlinks, and through /proc/self/fd where a call needs a path: a
	// concurrent rename cannot point the change at another file.
	pfd, err := n.u.openUpper(n.rel(), unix.O_PATH|unix.O_NOFOLLOW, 0)
	if err != nil {
		return errno(err)
	}
	defer unix.Close(pfd)
	p := fmt.Sprintf("/proc/self/fd/%d", pfd)
	isLink := n.StableAttr().Mode == unix.S_IFLNK
	if m, ok := in.GetMode(); ok {
		if isLink {
			return syscall.EOPNOTSUPP
		}
		if err := unix.Chmod(p, m&0o7777); err != nil {
			return errno(err)
		}
	}
	uid, uok := in.GetUID()
	gid, gok := in.GetGID()
	if uok || gok {
		su, sg := -1, -1
		if uok {
			su = int(uid)
		}
		if gok {
			sg = int(gid)
		}
		if err := unix.Fchownat(pfd, "", su, sg, unix.AT_EMPTY_PATH); err != nil {
			return errno(err)
		}
	}
	if sz, ok := in.GetSize(); ok {
		var err error
		if fh, ok := f.(*file); ok && fh.writable {
			err = unix.Ftruncate(fh.fd, int64(sz))
		} else {
			err = unix.Truncate(p, int64(sz))
		}
		if err != nil {
			return errno(err)
		}
	}
	if in.Valid&(fuse.FATTR_ATIME|fuse.FATTR_MTIME) != 0 {
		ts := setattrTimes(in)
		// a symlink's own times: by name, not following the last link
		tp, flags := p, 0 // follow the /proc magic link to the object
		if isLink {
			tp, flags = n.u.upperPath(n.rel()), unix.AT_SYMLINK_NOFOLLOW
		}
		if err := unix.UtimesNanoAt(unix.AT_FDCWD, tp, ts[:], flags); err != nil {
			return errno(err)
		}
	}
	// attributes from the fd the change went through (no path walk)
	var st unix.Stat_t
	if err := unix.Fstat(pfd, &st); err != nil {
		return errno(err)
	}
	if s := n.state(); s.metacopy && len(s.lowers) > 0 {
		var dst unix.Stat_t // as the kernel: a metacopy's blocks are its data's
		if lstat(n.u.lowerPath(s.lowers[len(s.lowers)-1]), &dst) == nil {
			st.Blocks = dst.Blocks
		}
	}
	n.fillAttr(&st, n.StableAttr().Ino, &out.Attr)
	out.SetTimeout(n.opts.AttrTimeout)
	return 0
}

// setattrMetacopy serves a SETATTR (no size) of a lower-only regular file
// with one metadata-only copy-up that has the change applied as it is
// built (union.metacopyUp): no second pass over the new upper file. It
// reports done=false, doing nothing, when the node is not such a file.
func (n *node) setattrMetacopy(in *fuse.SetAttrIn, out *fuse.AttrOut) (done bool, err error) {
	if _, ok := in.GetSize(); ok || !n.metacopyCandidate() {
		return false, nil
	}
	name, parent := n.Parent()
	if parent == nil || n.IsRoot() {
		return false, nil
	}
	pn, ok := parent.Operations().(*node)
	if !ok {
		return false, nil
	}
	if err := pn.copyUp(); err != nil {
		return true, err
	}
	n.u.cuMu.Lock()
	defer n.u.cuMu.Unlock()
	if !n.metacopyCandidate() {
		return false, nil // copied up meanwhile: the common path serves it
	}
	s := n.state()
	dfd, err := n.u.upperDirFd(pn)
	if err != nil {
		return true, err
	}
	meta, data := n.u.lowerPath(s.lowers[0]), n.u.lowerPath(s.lowers[len(s.lowers)-1])
	var st unix.Stat_t
	if err := n.u.metacopyUp(dfd, name, meta, data, s.lowers[0], in, &pn.impure, &st); err != nil {
		return true, err
	}
	n.becameMetacopy()
	n.fillAttr(&st, n.StableAttr().Ino, &out.Attr)
	out.SetTimeout(n.opts.AttrTimeout)
	return true, nil
}

// metacopyCandidate reports whether a change of metadata makes the node
// a metadata-only copy (see copyUpMeta).
func (n *node) metacopyCandidate() bool {
	if n.u.upper == "" || n.u.format.UserXattr || n.StableAttr().Mode != unix.S_IFREG {
		return false
	}
	s := n.state()
	return !s.upper && len(s.lowers) > 0
}

// errNeedPath: setattrFd cannot do the change on the descriptor it has.
var errNeedPath = errors.New("setattr needs a path")

// setattrFd applies a SETATTR to the open file fd (writable: opened for
// writing) and fstats it into st.
func setattrFd(fd int, writable bool, in *fuse.SetAttrIn, st *unix.Stat_t) error {
	sz, truncate := in.GetSize()
	if truncate && !writable {
		return errNeedPath
	}
	if m, ok := in.GetMode(); ok {
		if err := unix.Fchmod(fd, m&0o7777); err != nil {
			return err
		}
	}
	uid, uok := in.GetUID()
	gid, gok := in.GetGID()
	if uok || gok {
		su, sg := -1, -1
		if uok {
			su = int(uid)
		}
		if gok {
			sg = int(gid)
		}
		if err := unix.Fchown(fd, su, sg); err != nil {
			return err
		}
	}
	if truncate {
		if err := unix.Ftruncate(fd, int64(sz)); err != nil {
			return err
		}
	}
	if in.Valid&(fuse.FATTR_ATIME|fuse.FATTR_MTIME) != 0 {
		ts := setattrTimes(in)
		if err := futimens(fd, &ts); err != nil {
			return err
		}
	}
	return unix.Fstat(fd, st)
}

// setattrTimes returns the times of a SETATTR for utimensat.
func setattrTimes(in *fuse.SetAttrIn) [2]unix.Timespec {
	ts := [2]unix.Timespec{{Nsec: unix.UTIME_OMIT}, {Nsec: unix.UTIME_OMIT}}
	if in.Valid&fuse.FATTR_ATIME != 0 {
		if in.Valid&fuse.FATTR_ATIME_NOW != 0 {
			ts[0] = unix.Timespec{Nsec: unix.UTIME_NOW}
		} else {
			ts[0] = unix.NsecToTimespec(int64(in.Atime)*1e9 + int64(in.Atimensec))
		}
	}
	if in.Valid&fuse.FATTR_MTIME != 0 {
		if in.Valid&fuse.FATTR_MTIME_NOW != 0 {
			ts[1] = unix.Timespec{Nsec: unix.UTIME_NOW}
		} else {
			ts[1] = unix.NsecToTimespec(int64(in.Mtime)*1e9 + int64(in.Mtimensec))
		}
	}
	return ts
}

var _ fs.NodeOpener = (*node)(nil)

func (n *node) Open(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	write := flags&unix.O_ACCMODE != unix.O_RDONLY || flags&unix.O_TRUNC != 0
	if write {
		if err := n.copyUpNotify(true); err != nil {
			return nil, 0, errno(err)
		}
	}
	s := n.state()
	if !write && (!s.upper || s.metacopy) && n.u.upper == "" {
		if _, data := n.paths(); n.readOnlyPassthrough(data) {
			fd, err := unix.Open(data, int(flags)&^(unix.O_CREAT|unix.O_EXCL|unix.O_NOCTTY)|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
			if err != nil {
				return nil, 0, errno(err)
			}
			var fflags uint32
			if !n.opts.Flush {
				fflags |= fuse.FOPEN_NOFLUSH
			}
			return n.newFile(fd, false, true, false), fflags, 0
		}
	}
	if !write && (!s.upper || s.metacopy) && flags&unix.O_DIRECT == 0 {
		// lower data, read-only: its pages stay valid (lower layers
		// never change), and the descriptor is opened on the first
		// READ (file.ensure)
		fflags := uint32(fuse.FOPEN_KEEP_CACHE)
		if !n.opts.Flush {
			fflags |= fuse.FOPEN_NOFLUSH
		}
		return n.newLazyFile(int(flags) &^ (unix.O_CREAT | unix.O_EXCL | unix.O_NOCTTY)), fflags, 0
	}

	_, data := n.paths()
	oflags := int(flags) &^ (unix.O_CREAT | unix.O_EXCL | unix.O_NOCTTY)
	var fd int
	var err error
	if s.upper && !s.metacopy {
		fd, err = n.u.openUpper(n.rel(), oflags, 0)
	} else {
		// lower layers never change; the final component is a file
		fd, err = unix.Open(data, oflags|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	}
	if err != nil {
		return nil, 0, errno(err)
	}
	// Passthrough only for upper files: the kernel keeps one backing file
	// per inode, and a lower backing file would take the writes of a
	// later open-for-write after copy-up.
	fh := n.newFile(fd, write, s.upper && !s.metacopy && !n.opts.NoPassthrough, s.upper && !s.metacopy)
	fh.lower.Store(!write && (!s.upper || s.metacopy))
	var fflags uint32
	if !n.opts.Flush {
		fflags |= fuse.FOPEN_NOFLUSH
	}
	if !s.upper || s.metacopy {
		fflags |= fuse.FOPEN_KEEP_CACHE
	}
	return fh, fflags, 0
}

// owner returns the uid and gid a new object in dir gets: the caller's,
// or the dir's gid if the dir is set-group-ID (gid -1: leave as created).
func owner(ctx context.Context, dirStat *unix.Stat_t) (int, int) {
	uid, gid := 0, 0
	if c, ok := fuse.FromContext(ctx); ok {
		uid, gid = int(c.Uid), int(c.Gid)
	}
	if dirStat != nil && dirStat.Mode&unix.S_ISGID != 0 {
		gid = -1
	}
	return uid, gid
}

// prepareCreate reports where a new child name goes in the upper layer
// and whether a whiteout occupies it.
//
// Preconditions: n is in the upper layer; u.cuMu is held.
// p goes through an fd of the dir (see union.safeUpper); call done when
// finished with it.
func (n *node) prepareCreate(name string) (p string, whiteout bool, dirSt unix.Stat_t, done func(), err error) {
	dir, done, err := n.u.safeUpperDir(n.rel())
	if err != nil {
		return "", false, dirSt, nil, err
	}
	if err := unix.Stat(dir, &dirSt); err != nil {
		done()
		return "", false, dirSt, nil, err
	}
	p = dir + "/" + name
	var st unix.Stat_t
	if err := lstat(p, &st); err == nil {
		if !overlay.IsWhiteoutStat(&st) {
			done()
			return "", false, dirSt, nil, unix.EEXIST
		}
		whiteout = true
	}
	return p, whiteout, dirSt, done, nil
}

// finishCreate fixes owner and mode of a new object at tmp (a temporary
// in the work dir, or the final path) and, for a temporary, renames it
// over the whiteout at p.
func (n *node) finishCreate(ctx context.Context, tmp, p string, mode uint32, dirSt *unix.Stat_t, exchange bool) error {
	uid, gid := owner(ctx, dirSt)
	if err := unix.Lchown(tmp, uid, gid); err != nil {
		return err
	}
	if mode&unix.S_IFMT != unix.S_IFLNK && mode&0o7000 != 0 {
		if err := unix.Chmod(tmp, mode&0o7777); err != nil {
			return err
		}
	}
	if tmp == p {
		return nil
	}
	if exchange {
		if err := unix.Renameat2(unix.AT_FDCWD, tmp, unix.AT_FDCWD, p, unix.RENAME_EXCHANGE); err != nil {
			return err
		}
		return os.Remove(tmp)
	}
	return unix.Rename(tmp, p)
}

func (n *node) createdEntry(ctx context.Context, p string, out *fuse.EntryOut, isDir bool) (*fs.Inode, error) {
	name := path.Base(p)
	e := &entry{upper: true}
	if err := lstat(p, &e.st); err != nil {
		return nil, err
	}
	e.ino = n.u.ino(e.st.Dev, e.st.Ino)
	if isDir {
		e.opaque = true
	}
	return n.newChild(ctx, name, e, out), nil
}

var _ fs.NodeCreater = (*node)(nil)

func (n *node) Create(ctx context.Context, name string, flags uint32, mode uint32, out *fuse.EntryOut) (*fs.Inode, fs.FileHandle, uint32, syscall.Errno) {
	if err := n.copyUp(); err != nil {
		return nil, nil, 0, errno(err)
	}
	n.u.cuMu.Lock()
	defer n.u.cuMu.Unlock()
	n.noteName(name)
	if ch, fh, fflags, ok, err := n.createAt(ctx, name, flags, mode, out); ok || err != nil {
		return ch, fh, fflags, errno(err)
	}
	p, wo, dirSt, done, err := n.prepareCreate(name)
	if err != nil {
		return nil, nil, 0, errno(err)
	}
	defer done()
	target := p
	if wo {
		target = n.u.tmpName()
	}
	oflags := int(flags)&^(unix.O_NOCTTY) | unix.O_CREAT | unix.O_EXCL | unix.O_NOFOLLOW
	var fd int
	if wo {
		fd, err = unix.Open(target, oflags|unix.O_CLOEXEC, mode&0o7777) // in the private work dir
	} else {
		fd, err = n.u.openUpper(path.Join(n.rel(), name), oflags, mode&0o7777)
	}
	if err != nil {
		return nil, nil, 0, errno(err)
	}
	if err := n.finishCreate(ctx, target, p, mode, &dirSt, false); err != nil {
		unix.Close(fd)
		os.Remove(target)
		return nil, nil, 0, errno(err)
	}
	ch, err := n.createdEntry(ctx, p, out, false)
	if err != nil {
		unix.Close(fd)
		return nil, nil, 0, errno(err)
	}
	write := flags&unix.O_ACCMODE != unix.O_RDONLY
	var fflags uint32
	if !n.opts.Flush {
		fflags |= fuse.FOPEN_NOFLUSH
	}
	return ch, ch.Operations().(*node).newFile(fd, write, !n.opts.NoPassthrough, true), fflags, 0
}

// createAt is Create's common case, a name free in the upper dir: one
// openat on a held fd of the upper dir (union.upperDirFd), then fchown
// (only when the caller's ids differ from the server's), fchmod (for
// set-id bits) and fstat on the new fd, with no path resolved. It
// reports ok=false, with no error, when a whiteout holds the name (Create
// then replaces it through the work dir).
//
// Preconditions: n is in the upper layer; u.cuMu is held.
func (n *node) createAt(ctx context.Context, name string, flags, mode uint32, out *fuse.EntryOut) (ch *fs.Inode, fh fs.FileHandle, fflags uint32, ok bool, err error) {
	dfd, err := n.u.upperDirFd(n)
	if err != nil {
		return nil, nil, 0, false, err
	}
	var dirSt unix.Stat_t
	if err := unix.Fstat(dfd, &dirSt); err != nil {
		return nil, nil, 0, false, err
	}
	oflags := int(flags)&^(unix.O_NOCTTY) | unix.O_CREAT | unix.O_EXCL | unix.O_NOFOLLOW | unix.O_CLOEXEC
	fd, err := unix.Openat(dfd, name, oflags, mode&0o7777)
	if errors.Is(err, unix.EEXIST) {
		var st unix.Stat_t
		if unix.Fstatat(dfd, name, &st, unix.AT_SYMLINK_NOFOLLOW) == nil && overlay.IsWhiteoutStat(&st) {
			return nil, nil, 0, false, nil
		}
	}
	if err != nil {
		return nil, nil, 0, false, err
	}
	fail := func(err error) (*fs.Inode, fs.FileHandle, uint32, bool, error) {
		unix.Close(fd)
		unix.Unlinkat(dfd, name, 0)
		return nil, nil, 0, false, err
	}
	uid, gid := owner(ctx, &dirSt)
	// the new file already has the server's ids (the dir's group in a
	// set-group-ID dir, where owner answers -1): chown only to change them
	if uint32(uid) != n.u.created.uid || gid != -1 && uint32(gid) != n.u.created.egid { //nolint:gosec // ids are 32-bit
		if err := unix.Fchown(fd, uid, gid); err != nil {
			return fail(err)
		}
	}
	if mode&0o7000 != 0 {
		if err := unix.Fchmod(fd, mode&0o7777); err != nil {
			return fail(err)
		}
	}
	e := &entry{upper: true}
	if err := unix.Fstat(fd, &e.st); err != nil {
		return fail(err)
	}
	e.ino = n.u.ino(e.st.Dev, e.st.Ino)
	ch = n.newChild(ctx, name, e, out)
	cn := ch.Operations().(*node)
	cn.mu.Lock()
	cn.noCap = true // a new file has no xattrs but what the fs adds (never a capability)
	cn.mu.Unlock()
	write := flags&unix.O_ACCMODE != unix.O_RDONLY
	if !n.opts.Flush {
		fflags |= fuse.FOPEN_NOFLUSH
	}
	return ch, cn.newFile(fd, write, !n.opts.NoPassthrough, true), fflags, true, nil
}

var _ fs.NodeMkdirer = (*node)(nil)

func (n *node) Mkdir(ctx context.Context, name string, mode uint32, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	ch, err := n.makeChild(ctx, name, unix.S_IFDIR|mode, out, func(target string, overWhiteout bool) error {
		if err := unix.Mkdir(target, mode&0o7777); err != nil {
			return err
		}
		if overWhiteout {
			// the name hid a lower object: the new dir must hide lower
			// contents of the same name
			if err := n.u.format.SetOpaque(target); err != nil {
				_ = os.Remove(target)
				return err
			}
		}
		return nil
	})
	if err == nil {
		// a new dir: every name in it will be made through this mount
		cn := ch.Operations().(*node)
		cn.mu.Lock()
		cn.names = map[string]struct{}{}
		cn.mu.Unlock()
	}
	return ch, errno(err)
}

var _ fs.NodeMknoder = (*node)(nil)

func (n *node) Mknod(ctx context.Context, name string, mode uint32, dev uint32, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	if mode&unix.S_IFMT == unix.S_IFCHR && dev == 0 {
		// a char device 0/0 is a whiteout on disk; refuse it as the
		// kernel's overlayfs does not (it would vanish here).
		return nil, syscall.EPERM
	}
	ch, err := n.makeChild(ctx, name, mode, out, func(target string, _ bool) error {
		return unix.Mknod(target, mode, int(dev))
	})
	return ch, errno(err)
}

var _ fs.NodeSymlinker = (*node)(nil)

func (n *node) Symlink(ctx context.Context, target, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	ch, err := n.makeChild(ctx, name, unix.S_IFLNK, out, func(tp string, _ bool) error {
		return unix.Symlink(target, tp)
	})
	return ch, errno(err)
}

// makeChild creates the child name of n (a dir, node, or symlink) in the
// upper layer: build makes it at target, the final path, or a temporary
// in the work dir when a whiteout holds the name (overWhiteout); then
// finishCreate gives it its owner and renames it over the whiteout (an
// exchange for a dir), and the new entry is returned. It copies n up and
// holds u.cuMu throughout.
func (n *node) makeChild(ctx context.Context, name string, mode uint32, out *fuse.EntryOut, build func(target string, overWhiteout bool) error) (*fs.Inode, error) {
	if err := n.copyUp(); err != nil {
		return nil, err
	}
	n.u.cuMu.Lock()
	defer n.u.cuMu.Unlock()
	n.noteName(name)
	p, wo, dirSt, done, err := n.prepareCreate(name)
	if err != nil {
		return nil, err
	}
	defer done()
	target := p
	if wo {
		target = n.u.tmpName()
	}
	if err := build(target, wo); err != nil {
		return nil, err
	}
	isDir := mode&unix.S_IFMT == unix.S_IFDIR
	if err := n.finishCreate(ctx, target, p, mode, &dirSt, isDir && wo); err != nil {
		_ = os.Remove(target)
		return nil, err
	}
	return n.createdEntry(ctx, p, out, isDir)
}

var _ fs.NodeLinker = (*node)(nil)

func (n *node) Link(ctx context.Context, target fs.InodeEmbedder, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	t, ok := target.(*node)
	if !ok {
		return nil, syscall.EXDEV
	}
	if err := t.copyUp(); err != nil {
		return nil, errno(err)
	}
	if err := n.copyUp(); err != nil {
		return nil, errno(err)
	}
	n.u.cuMu.Lock()
	defer n.u.cuMu.Unlock()
	n.noteName(name)
	p, wo, _, done, err := n.prepareCreate(name)
	if err != nil {
		return nil, errno(err)
	}
	defer done()
	src, srcDone, err := n.u.safeUpper(t.rel())
	if err != nil {
		return nil, errno(err)
	}
	defer srcDone()
	dst := p
	if wo {
		dst = n.u.tmpName()
	}
	if err := unix.Link(src, dst); err != nil {
		return nil, errno(err)
	}
	if wo {
		if err := unix.Rename(dst, p); err != nil {
			os.Remove(dst)
			return nil, errno(err)
		}
	}
	var st unix.Stat_t
	if err := lstat(p, &st); err != nil {
		return nil, errno(err)
	}
	n.fillAttr(&st, t.StableAttr().Ino, &out.Attr)
	out.SetEntryTimeout(n.opts.EntryTimeout)
	out.SetAttrTimeout(n.opts.AttrTimeout)
	return t.EmbeddedInode(), 0
}

var _ fs.NodeReadlinker = (*node)(nil)

func (n *node) Readlink(ctx context.Context) ([]byte, syscall.Errno) {
	meta, _ := n.paths()
	s, err := readlink(meta)
	if err != nil {
		return nil, errno(err)
	}
	return []byte(s), 0
}

var _ fs.NodeUnlinker = (*node)(nil)

func (n *node) Unlink(ctx context.Context, name string) syscall.Errno {
	return n.remove(name, false)
}

var _ fs.NodeRmdirer = (*node)(nil)

func (n *node) Rmdir(ctx context.Context, name string) syscall.Errno {
	return n.remove(name, true)
}

// removeTarget resolves the child name for remove. A lower-only child the
// kernel already knows (rm -rf after READDIRPLUS) is answered from its
// node: lower layers never change, and the upper only through this mount
// (which updates the node's state); anything else is looked up.
func (n *node) removeTarget(name string) (*entry, error) {
	if ch := n.GetChild(name); ch != nil {
		if cn, ok := ch.Operations().(*node); ok {
			s := cn.state()
			if !s.upper && !s.metacopy && len(s.lowers) > 0 {
				e := &entry{lowers: s.lowers, ino: ch.StableAttr().Ino}
				e.st.Mode = ch.StableAttr().Mode
				return e, nil
			}
		}
	}
	return n.u.lookup(n.rel(), n.dirState(), name)
}

// remove deletes name from the union: from the upper layer if it is
// there, and with a whiteout if a lower layer has the name.
func (n *node) remove(name string, dir bool) syscall.Errno {
	if n.u.upper == "" {
		return syscall.EROFS
	}
	e, err := n.removeTarget(name)
	if err != nil {
		return errno(err)
	}
	if dir != e.isDir() {
		if dir {
			return syscall.ENOTDIR
		}
		return syscall.EISDIR
	}
	if dir {
		ents, err := n.u.readDir(path.Join(n.rel(), name), dirState{upper: e.upper, lowers: e.lowers})
		if err != nil {
			return errno(err)
		}
		if len(ents) > 0 {
			return syscall.ENOTEMPTY
		}
	}
	if err := n.copyUp(); err != nil {
		return errno(err)
	}
	n.u.cuMu.Lock()
	defer n.u.cuMu.Unlock()
	if dir {
		n.u.dropDirFds() // the dir goes; a held fd of it must not be used
	}
	if !e.upper {
		// lower only (the common rm -rf of an image tree): a whiteout,
		// made on a held fd of the upper dir
		dfd, err := n.u.upperDirFd(n)
		if err != nil {
			return errno(err)
		}
		n.noteName(name) // the whiteout: a char device 0/0
		return errno(unix.Mknodat(dfd, name, unix.S_IFCHR, 0))
	}
	rel := n.rel()
	needWO, err := n.u.lowerHas(n.dirState(), name)
	if err != nil {
		return errno(err)
	}
	p, done, err := n.u.safeUpper(path.Join(rel, name))
	if err != nil {
		return errno(err)
	}
	defer done()
	switch {
	case needWO:
		err = n.u.replaceWithWhiteout(p, dir)
	case dir:
		err = n.u.removeUpperDir(p)
	default:
		err = unix.Unlink(p)
	}
	if err == nil && !needWO {
		n.forgetName(name)
	}
	return errno(err)
}

var _ fs.NodeRenamer = (*node)(nil)

func (n *node) Rename(ctx context.Context, name string, newParent fs.InodeEmbedder, newName string, flags uint32) syscall.Errno {
	if n.u.upper == "" {
		return syscall.EROFS
	}
	np, ok := newParent.(*node)
	if !ok {
		return syscall.EXDEV
	}
	if flags&^(unix.RENAME_NOREPLACE|unix.RENAME_EXCHANGE) != 0 {
		return syscall.EINVAL
	}
	rel, nrel := n.rel(), np.rel()
	src, err := n.u.lookup(rel, n.dirState(), name)
	if err != nil {
		return errno(err)
	}
	dst, err := n.u.lookup(nrel, np.dirState(), newName)
	if err != nil && !errors.Is(err, unix.ENOENT) {
		return errno(err)
	}
	if err != nil {
		dst = nil
	}
	if flags&unix.RENAME_EXCHANGE != 0 {
		return n.exchange(src, dst, name, np, newName)
	}
	if dst != nil {
		if flags&unix.RENAME_NOREPLACE != 0 {
			return syscall.EEXIST
		}
		if dst.ino == src.ino {
			return 0 // both names are the same object
		}
		switch {
		case dst.isDir() && !src.isDir():
			return syscall.EISDIR
		case !dst.isDir() && src.isDir():
			return syscall.ENOTDIR
		case dst.isDir():
			ents, err := n.u.readDir(path.Join(nrel, newName), dirState{upper: dst.upper, lowers: dst.lowers})
			if err != nil {
				return errno(err)
			}
			if len(ents) > 0 {
				return syscall.ENOTEMPTY
			}
		}
	}
	srcNode := n.GetChild(name)
	if src.isDir() && len(src.lowers) > 0 && n.opts.NoRedirectDir {
		return syscall.EXDEV
	}
	// bring the source object up: a dir alone (its lower contents stay
	// below, found through the redirect), a file with its data
	if srcNode != nil {
		if err := srcNode.Operations().(*node).copyUp(); err != nil {
			return errno(err)
		}
	} else if err := n.copyUpChild(name, src); err != nil {
		return errno(err)
	}
	if err := np.copyUp(); err != nil {
		return errno(err)
	}
	n.u.cuMu.Lock()
	defer n.u.cuMu.Unlock()
	n.u.dropDirFds() // a dir may be replaced or removed
	srcWO, err := n.u.lowerHas(n.dirState(), name)
	if err != nil {
		return errno(err)
	}
	dstLower, err := n.u.lowerHas(np.dirState(), newName)
	if err != nil {
		return errno(err)
	}
	sp, sdone, err := n.u.safeUpper(path.Join(rel, name))
	if err != nil {
		return errno(err)
	}
	defer sdone()
	dp, ddone, err := n.u.safeUpper(path.Join(nrel, newName))
	if err != nil {
		return errno(err)
	}
	defer ddone()
	if src.isDir() {
		if len(src.lowers) > 0 {
			// kernel redirect_dir=on: the moved dir records where its
			// lower contents are
			v := "/" + src.lowers[0].path
			if err := unix.Lsetxattr(sp, n.u.format.Xattr(overlay.XattrRedirect), []byte(v), 0); err != nil {
				return errno(err)
			}
		} else if dstLower && !src.opaque {
			if err := n.u.format.SetOpaque(sp); err != nil {
				return errno(err)
			}
		}
	}
	// clear the destination in the upper layer: a whiteout (a dir cannot
	// be renamed over one) or an empty-looking dir holding whiteouts
	var dst0 unix.Stat_t
	if err := lstat(dp, &dst0); err == nil {
		switch {
		case overlay.IsWhiteoutStat(&dst0) && src.isDir():
			if err := unix.Unlink(dp); err != nil {
				return errno(err)
			}
		case dst0.Mode&unix.S_IFMT == unix.S_IFDIR:
			if err := n.u.removeUpperDir(dp); err != nil {
				return errno(err)
			}
		}
	}
	var rflags uint
	if srcWO {
		rflags |= unix.RENAME_WHITEOUT
	}
	np.noteName(newName)
	if err := unix.Renameat2(unix.AT_FDCWD, sp, unix.AT_FDCWD, dp, rflags); err != nil {
		return errno(err)
	}
	if !srcWO {
		n.forgetName(name)
	}
	if len(src.lowers) > 0 {
		// the moved object has an origin or a redirect
		if err := n.u.markImpure(path.Dir(dp)); err != nil {
			return errno(err)
		}
	}
	if srcNode != nil {
		sn := srcNode.Operations().(*node)
		sn.mu.Lock()
		sn.st.upper = true
		if !src.isDir() {
			// a renamed copy keeps its origin; nothing below shows
			// through at the new name
		} else if len(src.lowers) == 0 {
			sn.st.lowers = nil
			sn.st.index = nil
		}
		sn.mu.Unlock()
	}
	return 0
}

// copyUpChild copies up a child that has no inode in the tree.
func (n *node) copyUpChild(name string, e *entry) error {
	if e.upper && !e.metacopy {
		return nil
	}
	if err := n.copyUp(); err != nil {
		return err
	}
	n.u.cuMu.Lock()
	defer n.u.cuMu.Unlock()
	rel := path.Join(n.rel(), name)
	if e.upper {
		return n.u.copyUp(rel, n.u.upperPath(rel), n.u.lowerPath(e.lowers[len(e.lowers)-1]), nil, true, false, nil)
	}
	meta := n.u.lowerPath(e.lowers[0])
	data := meta
	if e.metacopy {
		data = n.u.lowerPath(e.lowers[len(e.lowers)-1])
	}
	origin := e.lowers[0]
	err := n.u.copyUp(rel, meta, data, &origin, false, false, &n.impure)
	if errors.Is(err, unix.EEXIST) {
		err = nil
	}
	return err
}

// exchange implements RENAME_EXCHANGE for non-dirs and for dirs that live
// only in the upper layer; other dirs get EXDEV, so callers fall back.
func (n *node) exchange(a, b *entry, name string, np *node, newName string) syscall.Errno {
	if b == nil {
		return syscall.ENOENT
	}
	if (a.isDir() && len(a.lowers) > 0) || (b.isDir() && len(b.lowers) > 0) {
		return syscall.EXDEV
	}
	if err := n.copyUpChild(name, a); err != nil {
		return errno(err)
	}
	if err := np.copyUpChild(newName, b); err != nil {
		return errno(err)
	}
	n.u.cuMu.Lock()
	defer n.u.cuMu.Unlock()
	n.u.dropDirFds() // exchanged dirs swap places
	ap, adone, err := n.u.safeUpper(path.Join(n.rel(), name))
	if err != nil {
		return errno(err)
	}
	defer adone()
	bp, bdone, err := n.u.safeUpper(path.Join(np.rel(), newName))
	if err != nil {
		return errno(err)
	}
	defer bdone()
	for _, c := range []struct {
		e    *entry
		p    string
		dir  dirState
		name string
	}{{a, ap, np.dirState(), newName}, {b, bp, n.dirState(), name}} {
		if c.e.isDir() && !c.e.opaque {
			if has, _ := n.u.lowerHas(c.dir, c.name); has {
				if err := n.u.format.SetOpaque(c.p); err != nil {
					return errno(err)
				}
			}
		}
	}
	return errno(unix.Renameat2(unix.AT_FDCWD, ap, unix.AT_FDCWD, bp, unix.RENAME_EXCHANGE))
}

var _ fs.NodeGetxattrer = (*node)(nil)

func (n *node) Getxattr(ctx context.Context, attr string, dest []byte) (uint32, syscall.Errno) {
	if overlay.IsOverlayXattr(attr) {
		return 0, syscall.ENODATA
	}
	isCap := attr == "security.capability"
	var gen uint64
	if isCap {
		n.mu.Lock()
		none, g := n.noCap, n.xattrGen
		n.mu.Unlock()
		if none {
			return 0, syscall.ENODATA
		}
		gen = g
	}
	meta, _ := n.paths()
	sz, err := unix.Lgetxattr(meta, attr, dest)
	if isCap && errors.Is(err, unix.ENODATA) {
		n.mu.Lock()
		if n.xattrGen == gen {
			n.noCap = true
		}
		n.mu.Unlock()
	}
	if err != nil {
		if errors.Is(err, unix.ERANGE) {
			sz, err = unix.Lgetxattr(meta, attr, nil)
			if err == nil {
				return uint32(sz), syscall.ERANGE
			}
		}
		return 0, errno(err)
	}
	return uint32(sz), 0
}

var _ fs.NodeListxattrer = (*node)(nil)

func (n *node) Listxattr(ctx context.Context, dest []byte) (uint32, syscall.Errno) {
	meta, _ := n.paths()
	names, err := listxattr(meta)
	if err != nil {
		return 0, errno(err)
	}
	var buf []byte
	for _, name := range names {
		if !overlay.IsOverlayXattr(name) {
			buf = append(buf, name...)
			buf = append(buf, 0)
		}
	}
	if len(dest) < len(buf) {
		return uint32(len(buf)), syscall.ERANGE
	}
	return uint32(copy(dest, buf)), 0
}

var _ fs.NodeSetxattrer = (*node)(nil)

func (n *node) Setxattr(ctx context.Context, attr string, data []byte, flags uint32) syscall.Errno {
	if overlay.IsOverlayXattr(attr) {
		return syscall.EPERM
	}
	return n.changeUpperXattr(func(p string) error { return unix.Lsetxattr(p, attr, data, int(flags)) })
}

// changeUpperXattr copies the node up (metadata only for a lower file) and
// runs change on its upper object's path, announced to xattr readers
// before and after (xattrChanging).
func (n *node) changeUpperXattr(change func(p string) error) syscall.Errno {
	n.xattrChanging()
	defer n.xattrChanging()
	if err := n.copyUpMeta(); err != nil {
		return errno(err)
	}
	p, done, err := n.u.safeUpper(n.rel())
	if err != nil {
		return errno(err)
	}
	defer done()
	return errno(change(p))
}

var _ fs.NodeRemovexattrer = (*node)(nil)

func (n *node) Removexattr(ctx context.Context, attr string) syscall.Errno {
	if overlay.IsOverlayXattr(attr) {
		return syscall.ENODATA
	}
	meta, _ := n.paths()
	if _, err := unix.Lgetxattr(meta, attr, nil); err != nil {
		return errno(err)
	}
	return n.changeUpperXattr(func(p string) error { return unix.Lremovexattr(p, attr) })
}

var _ fs.NodeStatfser = (*node)(nil)

func (n *node) Statfs(ctx context.Context, out *fuse.StatfsOut) syscall.Errno {
	p := n.u.upper
	if p == "" {
		p = n.u.lowers[0]
	}
	var st unix.Statfs_t
	if err := unix.Statfs(p, &st); err != nil {
		return errno(err)
	}
	out.FromStatfsT((*syscall.Statfs_t)(unsafe.Pointer(&st)))
	return 0
}

var _ fs.NodeCopyFileRanger = (*node)(nil)

func (n *node) CopyFileRange(ctx context.Context, fhIn fs.FileHandle, offIn uint64, out *fs.Inode, fhOut fs.FileHandle, offOut uint64, length uint64, flags uint64) (uint32, syscall.Errno) {
	in, ok1 := fhIn.(*file)
	o, ok2 := fhOut.(*file)
	if !ok1 || !ok2 {
		return 0, syscall.EBADF
	}
	if errno := in.ensure(); errno != 0 {
		return 0, errno
	}
	if errno := in.follow(); errno != 0 {
		return 0, errno
	}
	if errno := o.ensure(); errno != 0 {
		return 0, errno
	}
	ri, ro := int64(offIn), int64(offOut)
	c, err := unix.CopyFileRange(in.fd, &ri, o.fd, &ro, int(length), int(flags))
	if err != nil {
		return 0, errno(err)
	}
	return uint32(c), 0
}

// timeouts for entries the kernel may cache
func durationOr(d, def time.Duration) time.Duration {
	if d == 0 {
		return def
	}
	return d
}
