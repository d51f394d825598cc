// Package overlay implements the union semantics of kernel overlayfs in
// plain Go, and mounts layer stacks through kernel overlayfs.
//
// # Model
//
// A [Stack] is an ordered list of layer directories: an optional writable
// upper layer (with its work dir on the same filesystem) above one or more
// read-only lower layers, topmost first. The union of a path is decided by
// the topmost layer that has the name; lower layers are never written.
//
// # On-disk format
//
// Layers use kernel overlayfs's own format, so kernel overlayfs and strata's
// FUSE backend can mount the very same directories:
//
//   - whiteout: a character device 0/0 (written by strata), or, read in lower
//     layers only, an empty regular file carrying the overlay "whiteout"
//     xattr inside a directory marked opaque="x";
//   - opaque directory: the overlay "opaque" xattr set to "y";
//   - redirected directory: the overlay "redirect" xattr (redirect_dir=on);
//   - metadata-only copy: the overlay "metacopy" xattr (metacopy=on).
//
// Overlay xattrs live in the trusted.overlay. namespace, or user.overlay.
// when the stack uses [WithUserXattr] (the kernel's userxattr option). OCI
// whiteout names (.wh.NAME, .wh..wh..opq) exist only in tar streams; the
// codecs in whiteout.go convert them.
//
// # Mounting
//
// [Mount] and [MountStack] mount a Stack with kernel overlayfs. Kernel
// features are found by [Probe] (tiny real mounts, once per process, never
// guessed from the kernel version). With the new mount API each layer is
// one fsconfig "lowerdir+" (Linux 6.8+), so chains of up to
// [MaxKernelLowers] (500) lowers mount whatever their path lengths; a path
// over fsconfig's 255-byte limit is passed as a file descriptor
// (FSCONFIG_SET_FD, 6.13+) or, on older kernels, relative to its parent
// from a thread with a private cwd. Without the new API, mount(2) gets one
// option string, shortened to paths relative to the layers' common parent
// when it would exceed a page. A 501st lower fails before any system call
// with [ErrTooManyLayers]; use the FUSE backend or flatten the chain. One
// lower and no upper is a read-only bind mount (overlayfs refuses it).
//
// The format options of [FormatOptions] are used only where Probe found
// them, and the mount is read back once per upper filesystem: an option the
// kernel lacks or turned off is listed in [MountResult].Dropped (or refused
// with [MountOptions].StrictFormat), never dropped silently. An upper or
// work dir already used by another overlay mount is refused with
// [ErrInUse] (the kernel only warns in dmesg). [Unmount] retries a busy
// mount for about a second, then returns a [*BusyError] naming the
// processes that hold it; [WithDetach] detaches instead.
//
// # Invariants
//
//   - Lower layers are immutable while a Stack uses them. Nothing in this
//     package writes to a lower layer.
//   - Every change to the upper layer that must appear atomically (copy-up,
//     whiteout over an existing name) is built in the work dir and renamed
//     into place, so a crash leaves either nothing or the whole object.
//   - Paths handed to Stack methods are slash-separated and relative to the
//     union root; they are cleaned and must not escape it.
package overlay
