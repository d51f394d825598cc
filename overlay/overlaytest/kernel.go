//go:build linux

package overlaytest

import (
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/stratafs/strata/overlay"
)

// Kernel returns the kernel overlayfs backend: layers are mounted with
// overlay.Mount, i.e. with strata's format options (redirect_dir=on,
// metacopy=on, index=off, xino=auto). Extra raw overlay options, if any,
// are appended (e.g. "redirect_dir=off"); the backend then pins no quirks,
// as the options may change them. Mounting needs root.
func Kernel(extra ...string) Backend {
	return kernel{extra: extra}
}

type kernel struct{ extra []string }

func (k kernel) Name() string {
	if len(k.extra) > 0 {
		return "kernel-overlayfs+" + strings.Join(k.extra, ",")
	}
	return "kernel-overlayfs"
}

// Quirks pins what kernel overlayfs does with strata's format options;
// each value was observed on Linux 6.18 by this suite.
func (k kernel) Quirks() QuirkSet {
	if len(k.extra) > 0 {
		return nil
	}
	return QuirkSet{
		HardlinkBreaksOnCopyUp:             true,  // index=off
		RenameDirEXDEV:                     false, // redirect_dir=on
		RenameDirByRedirect:                true,
		MetadataOnlyCopyUp:                 true,  // metacopy=on
		InoChangesOnCopyUp:                 false, // same fs: real st_ino, origin kept
		DirInoChangesOnCopyUp:              false,
		OpaqueOnMkdirOverWhiteout:          true,
		CopyUpFillsSmallHoles:              true, // 1 MiB copy chunks
		XattrWhiteoutIgnoresMarkerOnLookup: true,
		StaleReadAfterCopyUp:               false,
		StaleMmapAfterCopyUp:               true, // overlayfs.rst, "Non-standard behavior" b)
	}
}

func (k kernel) Mount(t *testing.T, l Layers) Mounted {
	t.Helper()
	var opts []overlay.StackOption
	if l.Upper != "" {
		opts = append(opts, overlay.WithUpper(l.Upper, l.Work))
	}
	s, err := overlay.NewStack(l.Lowers, opts...)
	if err != nil {
		t.Fatalf("kernel backend: %v", err)
	}
	m := &kernelMount{stack: s, target: t.TempDir(), extra: k.extra}
	m.Remount(t)
	t.Cleanup(func() { m.Unmount(t) })
	return m
}

type kernelMount struct {
	stack   *overlay.Stack
	target  string
	extra   []string
	mounted bool
}

func (m *kernelMount) Root() string { return m.target }

func (m *kernelMount) Unmount(t *testing.T) {
	t.Helper()
	if !m.mounted {
		return
	}
	if err := overlay.Unmount(m.target); err != nil {
		// Something still holds the mount (a leaked fd, a cwd): detach it
		// so that the test's temp dirs can go, and report the leak.
		t.Errorf("kernel backend: %v; detaching lazily", err)
		if err := unix.Unmount(m.target, unix.MNT_DETACH); err != nil {
			t.Errorf("kernel backend: lazy unmount %s: %v", m.target, err)
			return
		}
	}
	m.mounted = false
}

func (m *kernelMount) Remount(t *testing.T) {
	t.Helper()
	m.Unmount(t)
	if err := overlay.Mount(m.stack, m.target, overlay.MountOptions{Extra: m.extra}); err != nil {
		t.Fatalf("kernel backend: %v", err)
	}
	m.mounted = true
}
