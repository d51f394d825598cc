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
