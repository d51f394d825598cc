package overlay

import (
	"fmt"
	"strings"

	"golang.org/x/sys/unix"
)

// MaxKernelLowers is the most lower layers kernel overlayfs accepts.
const MaxKernelLowers = 500

// MountOptions tune a kernel overlayfs mount of a Stack.
type MountOptions struct {
	// ReadOnly mounts read-only even when the stack has an upper layer.
	ReadOnly bool
	// Volatile skips syncing the upper layer (kernel "volatile").
	Volatile bool
	// Extra holds further raw overlay options, e.g. "xino=off".
	Extra []string
}

// FormatOptions returns the overlay options that fix strata's on-disk
// format (see ../shared/DESIGN.md): redirect_dir=on, metacopy=on,
// index=off, xino=auto, and userxattr when the stack uses it.
func FormatOptions(f Format) []string {
	if f.UserXattr {
		// The kernel refuses redirect_dir=on and metacopy=on with userxattr.
		return []string{"userxattr", "index=off", "xino=auto"}
	}
	return []string{"redirect_dir=on", "metacopy=on", "index=off", "xino=auto"}
}

// Mount mounts s on target with kernel overlayfs.
//
// TODO(foundation): new mount API with one lowerdir+ per layer, feature
// probing, 500-layer chains, in-use detection.
func Mount(s *Stack, target string, o MountOptions) error {
	if len(s.lowers) > MaxKernelLowers {
		return fmt.Errorf("overlay: mount %s: %d lower layers: %w (limit %d; use the FUSE backend or flatten the chain)",
			target, len(s.lowers), ErrTooManyLayers, MaxKernelLowers)
	}
	opts := []string{"lowerdir=" + strings.Join(s.lowers, ":")}
	if s.upper != "" {
		opts = append(opts, "upperdir="+s.upper, "workdir="+s.work)
	}
	opts = append(opts, FormatOptions(s.format)...)
	if o.Volatile {
		opts = append(opts, "volatile")
	}
	opts = append(opts, o.Extra...)
	var flags uintptr
	if o.ReadOnly {
		flags |= unix.MS_RDONLY
	}
	if err := unix.Mount("overlay", target, "overlay", flags, strings.Join(opts, ",")); err != nil {
		return fmt.Errorf("overlay: mount %s: %w", target, err)
	}
	return nil
}

// Unmount unmounts the overlay at target.
func Unmount(target string) error {
	if err := unix.Unmount(target, 0); err != nil {
		return fmt.Errorf("overlay: unmount %s: %w", target, err)
	}
	return nil
}
