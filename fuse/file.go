package fuse

import (
	"context"
	"sync/atomic"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// file is an open file: a descriptor on the real file in one layer. Reads,
// writes, locks, lseek, fallocate and fsync are go-fuse's loopback file
// operations on that descriptor.
type file struct {
	*fs.LoopbackFile
	n           *node
	fd          int
	writable    bool
	passthrough bool // offer the descriptor for kernel passthrough
	// lower: fd is on a lower file (or the data of a metadata-only copy),
	// opened read-only. Once the node is copied up, the fd is swapped for
	// the upper file (see follow), as the kernel re-opens the real file:
	// an fd opened before a copy-up sees the writes made after it.
	lower atomic.Bool
}

// follow swaps a read-only fd on lower data for one on the node's upper
// file once the node has been copied up with its data. The swap is dup3
// onto the same descriptor number, so go-fuse's loopback operations, which
// hold that number, read the upper file from then on.
func (f *file) follow() syscall.Errno {
	if !f.lower.Load() {
		return 0
	}
	s := f.n.state()
	if !s.upper || s.metacopy {
		return 0
	}
	fd, err := f.n.u.openUpper(f.n.rel(), unix.O_RDONLY, 0)
	if err != nil {
		return errno(err)
	}
	defer func() { _ = unix.Close(fd) }()
	if err := unix.Dup3(fd, f.fd, unix.O_CLOEXEC); err != nil {
		return errno(err)
	}
	f.lower.Store(false)
	return 0
}

var _ fs.FileReader = (*file)(nil)

func (f *file) Read(ctx context.Context, buf []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	if errno := f.follow(); errno != 0 {
		return nil, errno
	}
	return f.LoopbackFile.Read(ctx, buf, off)
}

var _ fs.FileLseeker = (*file)(nil)

func (f *file) Lseek(ctx context.Context, off uint64, whence uint32) (uint64, syscall.Errno) {
	if errno := f.follow(); errno != 0 {
		return 0, errno
	}
	return f.LoopbackFile.Lseek(ctx, off, whence)
}

// newFile wraps fd; upper: fd is on the node's own upper object (not a
// lower file, not a metadata-only copy), so SETATTRs and GETATTRs that
// come without a handle can use it (see node.held). The kernel refuses (EIO) to mix passthrough and cached
// opens of one inode, so passthrough is offered only when the node has no
// cached open; a cached open is counted until its release.
func (n *node) newFile(fd int, writable, passthrough, upper bool) *file {
	f := &file{
		LoopbackFile: fs.NewLoopbackFile(fd).(*fs.LoopbackFile),
		n:            n,
		fd:           fd,
		writable:     writable,
	}
	n.mu.Lock()
	if n.cachedOpens > 0 {
		passthrough = false
	}
	if !passthrough {
		n.cachedOpens++
	}
	f.passthrough = passthrough
	if upper && (n.held == nil || writable && !n.held.writable) {
		n.held = f
	}
	n.mu.Unlock()
	return f
}

// withHeldFd runs fn on the descriptor of an open handle on the node's
// upper object, if there is one, and reports whether there was. The
// handle cannot be released meanwhile (fn runs under n.mu: it must not
// call anything that takes it).
func (n *node) withHeldFd(fn func(fd int, writable bool) error) (bool, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.held == nil {
		return false, nil
	}
	return true, fn(n.held.fd, n.held.writable)
}

var _ fs.FileReleaser = (*file)(nil)

func (f *file) Release(ctx context.Context) syscall.Errno {
	f.n.mu.Lock()
	if !f.passthrough {
		f.n.cachedOpens--
	}
	if f.n.held == f {
		f.n.held = nil
	}
	f.n.mu.Unlock()
	return f.LoopbackFile.Release(ctx)
}

var _ fs.FilePassthroughFder = (*file)(nil)

// PassthroughFd offers the descriptor for kernel passthrough of reads
// and writes, for upper files only (see node.Open).
func (f *file) PassthroughFd() (int, bool) {
	if !f.passthrough {
		return -1, false
	}
	return f.fd, true
}

var _ fs.FileGetattrer = (*file)(nil)

// Getattr is answered by the node (it knows the union inode number).
func (f *file) Getattr(ctx context.Context, out *fuse.AttrOut) syscall.Errno {
	if errno := f.follow(); errno != 0 {
		return errno
	}
	var st unix.Stat_t
	if err := unix.Fstat(f.fd, &st); err != nil {
		return errno(err)
	}
	out.FromStat(sysStat(&st))
	return 0
}

var _ fs.FileFsyncer = (*file)(nil)

// Fsync syncs the real file, except on a volatile mount (as the kernel's
// "volatile" option, fsync is then a no-op).
func (f *file) Fsync(ctx context.Context, flags uint32) syscall.Errno {
	if f.n.opts.Volatile {
		return 0
	}
	return f.LoopbackFile.Fsync(ctx, flags)
}
