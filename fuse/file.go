package fuse

import (
	"context"
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
	fd          int
	writable    bool
	passthrough bool // offer the descriptor for kernel passthrough
}

func newFile(fd int, writable, passthrough bool) *file {
	return &file{
		LoopbackFile: fs.NewLoopbackFile(fd).(*fs.LoopbackFile),
		fd:           fd,
		writable:     writable,
		passthrough:  passthrough,
	}
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
	var st unix.Stat_t
	if err := unix.Fstat(f.fd, &st); err != nil {
		return errno(err)
	}
	out.FromStat(sysStat(&st))
	return 0
}
