// Package archive converts between OCI layer tar streams and strata's
// on-disk layer format (kernel overlayfs layers, see ../../overlay and
// /work/shared/DESIGN.md). It knows nothing about the snapshot store: it
// reads and writes plain directories.
//
// # Import: Apply
//
// [Apply] extracts one layer tar (plain, gzip or zstd, detected by magic)
// into an empty layer dir, hashing the compressed stream (the descriptor
// digest) and the uncompressed tar (the diff ID) while reading, and
// draining trailing bytes before it compares them with the expected
// digests ([WithExpectedDigest], [WithExpectedDiffID]).
//
// Conversion and semantics:
//
//   - ".wh.NAME" becomes a whiteout (char device 0/0) named NAME;
//     "DIR/.wh..wh..opq" marks DIR opaque (overlay "opaque" xattr "y"). Both
//     are order-independent: a marker may come before or after its
//     siblings. A tar char device 0/0 is the same thing as a whiteout in
//     this format and is treated as one.
//   - Whiteouts apply to lower layers only (OCI image-spec, layer.md): if
//     the same layer also creates NAME, the layer keeps its own NAME, in
//     whichever order the two entries come. If that NAME is a directory it
//     is also made opaque, because the lower NAME was deleted and only this
//     layer's content remains.
//   - Every trusted.overlay.* and user.overlay.* xattr in the stream is
//     dropped and counted ([Summary].StrippedXattrs): a forged metacopy +
//     redirect pair would let a layer read any file below it.
//   - Names are cleaned; a leading "/" is dropped (absolute names are
//     relative to the layer root, as containerd does); a name or hard-link
//     target whose ".." components climb above the root is an error
//     ([ErrUnsafePath]).
//   - Parent directories are resolved inside the layer root with openat2
//     RESOLVE_IN_ROOT: a symlink met on the way is followed as if the layer
//     root were "/", so "/etc" or "../../etc" lead to DIR/etc, never
//     outside. Missing parents are created (0755, root-owned, current
//     time). The final component is never followed: an entry replaces
//     whatever non-directory is at its name, and a directory entry over an
//     existing directory only updates its metadata.
//   - Hard links must name an existing non-directory inside the layer (a
//     whiteout does not count); a link to a symlink links the symlink
//     itself.
//   - Files get their mode (incl. setuid/setgid/sticky), owner, xattrs
//     (PAX SCHILY.xattr.*), mtime and atime (the mtime when the stream has
//     none); directory times are set after all entries are written.
//   - Device nodes are created by default (which needs root);
//     [WithDevices] can skip or refuse them.
//
// On any error Apply may leave a partial layer behind: the caller must
// remove the dir (the store extracts into staging/ and renames into place
// only on success). Apply never fsyncs per file; call [SyncDir] once
// before publishing the layer. Apply needs openat2 (Linux 5.6+) and fails
// with [ErrNotSupported] without it. It decompresses and hashes in one
// helper goroutine, a few MiB ahead of extraction, and returns only once
// that goroutine no longer reads r. Independent Applys may run
// concurrently.
//
// Not carried: LIBARCHIVE.xattr.* records (bsdtar's xattr encoding), ACLs
// other than as system.posix_acl_* xattrs, sockets.
//
// # Export: WriteDiff
//
// [WriteDiff] writes a layer's own changes as an OCI layer tar, walking only
// the layer dir in sorted order (PAX format): whiteouts become ".wh.NAME",
// opaque dirs get a ".wh..wh..opq" entry right after their own header,
// overlay xattrs are dropped, metacopy files are written with the data of
// the lower file they stand for, and a redirected directory (a renamed
// lower dir) is written in full at its new name (its merged content, marked
// opaque), since the consumer of the tar has no redirect. Hard links within
// the layer become tar hard links; sparse files are written plain.
//
// The output is deterministic for a given layer: mtimes keep their
// nanoseconds (PAX), access and change times are left out, owners are
// numeric only (no user/group names), and the layer root's own metadata is
// not written (as containerd does). [DiffStat] classifies the same walk
// against the lowers for "strata diff --stat".
package archive
