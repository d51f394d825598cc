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
// Layer indices: [Stack.Layers] lists the upper layer (if any) first,
// then the lowers; every index in this package (Entry.Layer,
// DirLayer.Index, DirEntry.Layer) indexes that slice.
//
// # Lookup
//
// Lookup works one directory at a time, the shape a FUSE LOOKUP(parent,
// name) needs: a [Dir] is the merged view of a union directory (the layers
// contributing a directory there, topmost first), and [Stack.LookupIn]
// resolves one name in it; [Stack.Lookup] chains LookupIn from the root.
// The rules are the kernel's (fs/overlayfs/namei.c):
//
//   - the topmost layer holding the name serves it; a whiteout there makes
//     the name absent;
//   - a directory merges with the directories of the same name below it,
//     until a layer holds a whiteout or a non-directory at that name, and
//     up to and including the first opaque (opaque="y") one;
//   - a directory carrying a redirect xattr (redirect_dir=on) continues in
//     the lower layers at the redirect's target: an absolute redirect is a
//     path from the roots of the lower layers below, a relative one a
//     sibling name in the same parent dirs;
//   - a regular file carrying the metacopy xattr serves its metadata, and
//     the next lower non-metacopy file of that name serves its data
//     (Entry.DataPath);
//   - under userxattr the kernel neither follows redirects nor metacopy;
//     meeting either is EPERM, here as there.
//
// Known divergence: the kernel's lookup treats every empty regular file
// with the whiteout xattr as a whiteout, in any layer and whatever its
// parent's marker, while its readdir filters them only in lower dirs marked
// opaque="x", so it lists names it then cannot find. strata applies the
// readdir rule to both (lower layers, parent marked "x"), which is the
// documented format and self-consistent. strata never writes xattr
// whiteouts. Likewise the kernel passes readdir of a directory that only
// one layer provides straight to that layer, listing its whiteouts (which
// lookup then hides); strata's ReadDir always drops whiteouts.
//
// # Writes
//
// [Stack.CopyUp], [Stack.CopyUpMeta] and [Stack.Remove] are the writes a
// FUSE backend needs below create/write/setattr/unlink/rmdir. Each object
// is built under a "#strata." temp name in the work dir's "work" subdir
// (the kernel's scratch dir, emptied by every kernel mount; see
// [Stack.CleanWork]) and renamed into place with RENAME_NOREPLACE, or
// exchanged with RENAME_EXCHANGE when a whiteout replaces a directory.
// Copy-up preserves mode, owner, atime/mtime (ns) and xattrs (never
// overlay's own) and restores the parent's times, as the kernel does.
// Hard links: like the kernel with index=off (strata's format), copy-up
// breaks a lower hard link; each copied-up name is an independent file.
//
// # Concurrency and lock order
//
// Lookups and readdirs take no locks: lower layers never change and the
// upper layer is read as it is. Dir and Entry values are snapshots.
// CopyUp, CopyUpMeta and Remove serialize per union path (a keyed mutex
// in Stack.state.locks, guarded by its own mutex), and re-check the
// lookup under the lock, so concurrent copy-ups of one path copy once.
// Lock order: a goroutine holds at most one path lock at a time; copy-up
// of the parents happens before the object's lock is taken.
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
