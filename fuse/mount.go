package fuse

import (
	"errors"
	"fmt"
	"log"
	"os"
	"runtime"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

	"github.com/stratafs/strata/overlay"
)

// Options tune a FUSE mount. The zero value is the kernel-overlayfs-like
// setup: allow_other and default_permissions on, passthrough on, 1 s
// timeouts for anything in the upper layer, 1 h for lower-only entries.
type Options struct {
	// Debug logs every FUSE request (costly; tests show it under -v).
	Debug bool
	// Volatile skips fsync of copied-up data and makes fsync a no-op
	// (kernel "volatile").
	Volatile bool
	// GOMAXPROCS, if > 0, is set for the whole process at Mount: the
	// server's parallelism matters more than any FUSE knob on small
	// machines (see shared/notes/fuse-create-path.md). Meant for a
	// process that only serves the mount.
	GOMAXPROCS int
	// Private drops allow_other: only the mounting user may access.
	Private bool
	// NoDefaultPermissions makes the kernel skip its mode checks. Off by
	// default: the kernel checks permissions as it does on overlayfs.
	NoDefaultPermissions bool
	// NoPassthrough serves all reads and writes through the server.
	NoPassthrough bool
	// NoRedirectDir answers EXDEV when renaming a dir with lower
	// contents, as kernel overlayfs does with redirect_dir=off.
	NoRedirectDir bool
	// Flush asks the kernel to send FLUSH on close (default: FOPEN_NOFLUSH;
	// POSIX and flock locks are kept by the kernel, so no FLUSH is needed).
	Flush bool
	// EntryTimeout, AttrTimeout: kernel cache time of entries and
	// attributes of objects in the upper layer (default 1 s; never 0).
	EntryTimeout, AttrTimeout time.Duration
	// NegativeTimeout: cache time of absent names (default 1 h, as
	// LowerTimeout). Long is safe: a name appears in the union only
	// through this mount (create, mknod, link, rename), and the kernel
	// replaces its negative dentry then; layers changed behind the mount's
	// back are undefined, as on kernel overlayfs.
	NegativeTimeout time.Duration
	// LowerTimeout: cache time of entries that live only in lower layers,
	// which never change while mounted (default 1 h).
	LowerTimeout time.Duration
	// Logger receives debug output; default the standard logger.
	Logger *log.Logger
}

func (o *Options) withDefaults() *Options {
	c := *o
	c.EntryTimeout = durationOr(c.EntryTimeout, time.Second)
	c.AttrTimeout = durationOr(c.AttrTimeout, time.Second)
	c.NegativeTimeout = durationOr(c.NegativeTimeout, time.Hour)
	c.LowerTimeout = durationOr(c.LowerTimeout, time.Hour)
	return &c
}

// RecommendedGOMAXPROCS is the server parallelism measured best on small
// machines: 1 P up to 2 CPUs (a second P mostly adds cross-CPU wakeups to
// a workload that keeps one request in flight: untar 1.5x, tree walk 2x
// faster with 1 P on 2 vCPUs), else all CPUs. Parallel client workloads
// on bigger machines are not measured yet.
func RecommendedGOMAXPROCS() int {
	if n := runtime.NumCPU(); n > 2 {
		return n
	}
	return 1
}

// Server is a mounted strata FUSE filesystem.
type Server struct {
	srv    *fuse.Server
	target string
	u      *union
	root   *node
}

// Mount serves stack on target (an existing dir) and returns once the
// kernel has the mount. Call Unmount, then Wait, to stop.
func Mount(stack *overlay.Stack, target string, opts Options) (*Server, error) {
	o := opts.withDefaults()
	if o.GOMAXPROCS > 0 {
		runtime.GOMAXPROCS(o.GOMAXPROCS)
	}
	// The kernel sends modes with the caller's umask applied: the server
	// creates files with exactly those, so its own umask must be 0 (as
	// fuse-overlayfs sets it). Like GOMAXPROCS this is process-wide.
	unix.Umask(0)
	// a dead server leaves ENOTCONN behind; clear it so we can mount
	if err := ClearStale(target); err != nil {
		return nil, err
	}
	u, err := newUnion(stack)
	if err != nil {
		return nil, err
	}
	u.volatile = o.Volatile
	root := &node{u: u, opts: o}
	for i := range u.lowers {
		root.st.lowers = append(root.st.lowers, lref{layer: i})
	}
	root.st.upper = u.upper != ""
	var rootSt unix.Stat_t
	rootPath := u.upper
	if len(u.lowers) > 0 {
		rootPath = u.lowers[0]
	}
	if err := unix.Stat(rootPath, &rootSt); err != nil {
		u.close()
		return nil, &os.PathError{Op: "stat", Path: rootPath, Err: err}
	}
	mo := fuse.MountOptions{
		AllowOther:  !o.Private,
		DirectMount: true,
		FsName:      "strata",
		Name:        "strata",
		Debug:       o.Debug,
		Logger:      o.Logger,
		// the kernel keeps POSIX and flock locks itself (EnableLocks off)
		MaxWrite: 1 << 20,
		// The kernel enforces POSIX ACLs (with default_permissions), as
		// kernel overlayfs does through the layers' filesystems.
		EnableAcl: true,
	}
	if !o.NoDefaultPermissions {
		mo.Options = append(mo.Options, "default_permissions")
	}
	// Devices and set-id programs work as on kernel overlayfs (go-fuse
	// defaults to nosuid,nodev when the flags are zero).
	mo.DirectMountFlags = syscall.MS_RELATIME
	// READDIRPLUS only where it pays (first chunk, and after stats of
	// the entries), plain READDIR otherwise (dir.go)
	mo.ExtraCapabilities |= fuse.CAP_READDIRPLUS_AUTO
	if u.upper == "" {
		mo.DirectMountFlags |= syscall.MS_RDONLY
		mo.Options = append(mo.Options, "ro")
	}
	ino := u.ino(rootSt.Dev, rootSt.Ino)
	fo := &fs.Options{
		MountOptions:    mo,
		EntryTimeout:    &o.EntryTimeout,
		AttrTimeout:     &o.AttrTimeout,
		NegativeTimeout: &o.NegativeTimeout,
		NullPermissions: true,
		RootStableAttr:  &fs.StableAttr{Ino: ino},
		Logger:          o.Logger,
	}
	srv, err := fs.Mount(target, root, fo)
	if err != nil {
		u.close()
		return nil, fmt.Errorf("fuse: mount %s: %w", target, err)
	}
	return &Server{srv: srv, target: target, u: u, root: root}, nil
}

// Wait blocks until the filesystem is unmounted.
func (s *Server) Wait() {
	s.srv.Wait()
	s.u.close()
}

// Unmount unmounts the filesystem; on EBUSY it detaches it lazily (the
// kernel then drops it when the last user leaves).
func (s *Server) Unmount() error {
	if err := s.srv.Unmount(); err != nil {
		if err2 := unix.Unmount(s.target, unix.MNT_DETACH); err2 != nil {
			return fmt.Errorf("fuse: unmount %s: %w", s.target, err)
		}
	}
	return nil
}

// Target returns the mount point.
func (s *Server) Target() string { return s.target }

// ClearStale detaches a dead FUSE mount (one whose server is gone, so
// that any access fails with ENOTCONN) from target. Anything else is
// left alone.
func ClearStale(target string) error {
	// statfs is never answered from the kernel's caches: on a mount whose
	// server is gone it fails with ENOTCONN
	var st unix.Statfs_t
	err := unix.Statfs(target, &st)
	if errors.Is(err, unix.ENOTCONN) || errors.Is(err, unix.ECONNABORTED) {
		if err := unix.Unmount(target, unix.MNT_DETACH); err != nil {
			return fmt.Errorf("fuse: clear dead mount %s: %w", target, err)
		}
	}
	return nil
}
