package fuse

import (
	"context"
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// file is an open file: a descriptor on the real file in one layer. Reads,
// writes, locks, lseek, fallocate and fsync are go-fuse's loopback file
// operations on that descriptor.
//
// A read-only open of lower data is lazy (newLazyFile): OPEN answers
// without a syscall and the descriptor is opened by the first operation
// that needs it (ensure). Lower files are cached by the kernel
// (FOPEN_KEEP_CACHE), so a warm open, read and close costs the OPEN and
// RELEASE round trips and nothing else.
type file struct {
	*fs.LoopbackFile // nil until opened
	n                *node
	fd               int // -1 until opened
	writable         bool
	passthrough      bool // offer the descriptor for kernel passthrough
	// lower: fd is on a lower file (or the data of a metadata-only copy),
	// opened read-only. Once the node is copied up, the fd is swapped for
	// the upper file (see follow), as the kernel re-opens the real file:
	// an fd opened before a copy-up sees the writes made after it.
	lower atomic.Bool

	opened atomic.Bool // fd and LoopbackFile are set
	openMu sync.Mutex  // serializes the lazy open
	oflags int         // open flags of a lazy open
}

// ensure opens the descriptor of a lazy file: the node's upper file if it
// has been copied up with its data meanwhile, else its lower data (as an
// open at this moment would).
func (f *file) ensure() syscall.Errno {
	if f.opened.Load() {
		return 0
	}
	f.openMu.Lock()
	defer f.openMu.Unlock()
	if f.opened.Load() {
		return 0
	}
	var fd int
	var err error
	if s := f.n.state(); s.upper && !s.metacopy {
		fd, err = f.n.u.openUpper(f.n.rel(), f.oflags, 0)
		f.lower.Store(false)
	} else {
		_, data := f.n.paths()
		// lower layers never change; the final component is a file
		fd, err = unix.Open(data, f.oflags|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	}
	if err != nil {
		return errno(err)
	}
	f.fd = fd
	f.LoopbackFile = fs.NewLoopbackFile(fd).(*fs.LoopbackFile)
	f.opened.Store(true)
	return 0
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
	if errno := f.ensure(); errno != 0 {
		return nil, errno
	}
	if errno := f.follow(); errno != 0 {
		return nil, errno
	}
	if len(buf) <= smallRead {
		// one pread and the reply's writev; go-fuse's splice of a
		// descriptor result costs ~8 syscalls, worth it for big reads only
		for {
			n, err := unix.Pread(f.fd, buf, off)
			if err == unix.EINTR {
				continue
			}
			if err != nil {
				return nil, errno(err)
			}
			return fuse.ReadResultData(buf[:n]), 0
		}
	}
	return f.LoopbackFile.Read(ctx, buf, off)
}

// smallRead is the largest READ answered by copying (see file.Read).
const smallRead = 64 << 10

var _ fs.FileLseeker = (*file)(nil)

func (f *file) Lseek(ctx context.Context, off uint64, whence uint32) (uint64, syscall.Errno) {
	if errno := f.ensure(); errno != 0 {
		return 0, errno
	}
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
	f.opened.Store(true)
	n.register(f, passthrough, upper)
	return f
}

// newLazyFile returns a read-only file on the node's lower data whose
// descriptor is opened with oflags on first use (see ensure).
func (n *node) newLazyFile(oflags int) *file {
	f := &file{n: n, fd: -1, oflags: oflags}
	f.lower.Store(true)
	n.register(f, false, false)
	return f
}

// register counts f among the node's open handles (see newFile).
func (n *node) register(f *file, passthrough, upper bool) {
	writable := f.writable
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
	f.openMu.Lock() // no lazy open in flight
	defer f.openMu.Unlock()
	if !f.opened.Load() {
		return 0
	}
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
	if errno := f.ensure(); errno != 0 {
		return errno
	}
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
	if errno := f.ensure(); errno != 0 {
		return errno
	}
	return f.LoopbackFile.Fsync(ctx, flags)
}

// The other loopback operations open a lazy file first.

var (
	_ fs.FileWriter    = (*file)(nil)
	_ fs.FileFlusher   = (*file)(nil)
	_ fs.FileGetlker   = (*file)(nil)
	_ fs.FileSetlker   = (*file)(nil)
	_ fs.FileSetlkwer  = (*file)(nil)
	_ fs.FileSetattrer = (*file)(nil)
	_ fs.FileAllocater = (*file)(nil)
	_ fs.FileIoctler   = (*file)(nil)
	_ fs.FileStatxer   = (*file)(nil)
)

func (f *file) Write(ctx context.Context, data []byte, off int64) (uint32, syscall.Errno) {
	if errno := f.ensure(); errno != 0 {
		return 0, errno
	}
	return f.LoopbackFile.Write(ctx, data, off)
}

func (f *file) Writev(ctx context.Context, data [][]byte, off int64) (uint32, syscall.Errno) {
	if errno := f.ensure(); errno != 0 {
		return 0, errno
	}
	return f.LoopbackFile.Writev(ctx, data, off)
}

func (f *file) Flush(ctx context.Context) syscall.Errno {
	if !f.opened.Load() {
		return 0 // nothing to flush
	}
	return f.LoopbackFile.Flush(ctx)
}

func (f *file) Getlk(ctx context.Context, owner uint64, lk *fuse.FileLock, flags uint32, out *fuse.FileLock) syscall.Errno {
	if errno := f.ensure(); errno != 0 {
		return errno
	}
	return f.LoopbackFile.Getlk(ctx, owner, lk, flags, out)
}

func (f *file) Setlk(ctx context.Context, owner uint64, lk *fuse.FileLock, flags uint32) syscall.Errno {
	if errno := f.ensure(); errno != 0 {
		return errno
	}
	return f.LoopbackFile.Setlk(ctx, owner, lk, flags)
}

func (f *file) Setlkw(ctx context.Context, owner uint64, lk *fuse.FileLock, flags uint32) syscall.Errno {
	if errno := f.ensure(); errno != 0 {
		return errno
	}
	return f.LoopbackFile.Setlkw(ctx, owner, lk, flags)
}

func (f *file) Setattr(ctx context.Context, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	if errno := f.ensure(); errno != 0 {
		return errno
	}
	return f.LoopbackFile.Setattr(ctx, in, out)
}

func (f *file) Allocate(ctx context.Context, off uint64, size uint64, mode uint32) syscall.Errno {
	if errno := f.ensure(); errno != 0 {
		return errno
	}
	return f.LoopbackFile.Allocate(ctx, off, size, mode)
}

func (f *file) Ioctl(ctx context.Context, cmd uint32, arg uint64, input []byte, output []byte) (int32, syscall.Errno) {
	if errno := f.ensure(); errno != 0 {
		return 0, errno
	}
	return f.LoopbackFile.Ioctl(ctx, cmd, arg, input, output)
}

func (f *file) Statx(ctx context.Context, flags uint32, mask uint32, out *fuse.StatxOut) syscall.Errno {
	if errno := f.ensure(); errno != 0 {
		return errno
	}
	return f.LoopbackFile.Statx(ctx, flags, mask, out)
}
