package command

import (
	"errors"
	"fmt"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/stratafs/strata/overlay"
)

// A Backend mounts an overlay.Stack on a directory and unmounts it again.
// strata has two: kernel overlayfs ("kernel") and its own FUSE server
// ("fuse"). The CLI picks one by name (--backend); "auto" tries kernel
// first and falls back to FUSE only when the kernel cannot do the job
// (see kernelCannot).
type Backend interface {
	// Name is the --backend name.
	Name() string
	// Mount mounts r.Stack on r.Target. On error nothing is mounted.
	Mount(r MountRequest) error
	// Unmount unmounts what this backend mounted on target.
	Unmount(target string) error
}

// MountRequest is one mount for a Backend.
type MountRequest struct {
	Stack   *overlay.Stack
	Target  string // absolute, an existing directory
	Options overlay.MountOptions
	// Foreground serves a FUSE mount in this process until it is
	// unmounted (Mount returns then); otherwise a detached server does.
	Foreground bool
	// LogFile is where a FUSE server logs ("" for the default).
	LogFile string
	// VFSFlags (MS_NODEV, MS_NOSUID, MS_NOEXEC, MS_NOATIME,
	// MS_NODIRATIME) are set on a FUSE mount once it is live.
	VFSFlags uintptr
	// ready, in a detached FUSE server, reports the mount to the
	// process that started it.
	ready *readyPipe
	// Debugf traces decisions (shown with --debug); Warnf reports what
	// the user should know (shown always, on stderr). Both are non-nil.
	Debugf, Warnf func(format string, a ...any)
}

// Backends by --backend name. fuse_backend.go replaces backends["fuse"]
// with the real FUSE backend from an init; the stub stays for builds
// without it.
var backends = map[string]Backend{
	"kernel": kernelBackend{},
	"fuse":   unbuiltBackend{name: "fuse", msg: "the FUSE backend is not built yet"},
}

// The statfs(2) type of FUSE mounts, to tell whose mount a target is.
const fuseMagic = unix.FUSE_SUPER_MAGIC

// backendForMagic returns the backend that unmounts a filesystem of the
// given statfs type: FUSE for FUSE mounts, the kernel backend for the rest
// (overlayfs, and the read-only bind mount overlay.Mount makes for a
// single lower layer).
func backendForMagic(magic int64) Backend {
	if magic == fuseMagic {
		return backends["fuse"]
	}
	return backends["kernel"]
}

// kernelCannot reports whether err says the kernel backend cannot serve
// this stack on this machine at all (so that "auto" may try FUSE), as
// opposed to a mistake that FUSE would hit too (a missing dir, a busy
// upper dir).
func kernelCannot(err error) bool {
	return errors.Is(err, overlay.ErrTooManyLayers) ||
		errors.Is(err, overlay.ErrNotSupported) ||
		errors.Is(err, syscall.ENODEV) || // no overlay filesystem in this kernel
		errors.Is(err, syscall.EPERM) // not privileged for kernel overlayfs here
}

type kernelBackend struct{}

func (kernelBackend) Name() string { return "kernel" }

// Mount mounts with overlay.MountStack, tracing how it mounted and
// warning about format options the kernel could not honour.
func (kernelBackend) Mount(r MountRequest) error {
	res, err := overlay.MountStack(r.Stack, r.Target, r.Options)
	if err != nil {
		return err
	}
	r.Debugf("kernel: %s, options %s", res.Method, strings.Join(res.Options, ","))
	for _, n := range res.Notes {
		r.Debugf("kernel: %s", n)
	}
	if len(res.Dropped) > 0 {
		r.Warnf("warning: mounted without %s (not supported here; see --debug)", strings.Join(res.Dropped, ","))
	}
	return nil
}

func (kernelBackend) Unmount(target string) error { return overlay.Unmount(target) }

// unbuiltBackend stands in for a backend this binary does not have.
type unbuiltBackend struct{ name, msg string }

func (b unbuiltBackend) Name() string { return b.name }

func (b unbuiltBackend) Mount(MountRequest) error {
	return classified{errors.New(b.msg), ErrBackendNotBuilt}
}

func (b unbuiltBackend) Unmount(target string) error {
	// A FUSE mount whose server died can still be detached by the kernel.
	if err := unix.Unmount(target, 0); err != nil {
		return fmt.Errorf("unmount %s: %w", target, err)
	}
	return nil
}
