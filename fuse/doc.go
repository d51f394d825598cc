// Package fuse serves an overlay.Stack through FUSE (go-fuse v2), writing
// the same on-disk format as kernel overlayfs, so either can mount the
// same layer dirs and take over from the other.
//
// # Model
//
// Every union object is a node in go-fuse's inode tree. A node's union
// path is its place in that tree; nodeState records where it lives in the
// layers: whether an upper object exists at that path, and the lower
// objects below (for a dir, the merged lower dirs; for a file, its
// origin and, for a metadata-only copy, its data). Lower layers never
// change, so what a node knows about them stays true; the upper layer
// changes only through this server.
//
// # Format (as kernel overlayfs with redirect_dir=on, index=off)
//
//   - delete of a lower name: whiteout (char device 0/0) in the upper;
//   - a dir made where a whiteout was: opaque="y";
//   - rename of a dir with lower contents: the dir is copied up alone and
//     gets an absolute redirect xattr to its lower path;
//   - copy-up: built in the work dir, renamed into place; the copy gets
//     the kernel's "origin" xattr (a file handle of the lower object).
//   - chmod/chown/utimes/setxattr of a lower regular file write a
//     metadata-only copy (kernel metacopy=on format: sparse file of the
//     same size, "metacopy" and "origin" xattrs; not under userxattr,
//     where the kernel refuses metacopy); its data is copied up on the
//     first open for write or truncate. Link and rename copy data up.
//     Kernel-written metacopy files and xattr whiteouts are read.
//
// # Permissions
//
// The mount has default_permissions and FUSE_POSIX_ACL: the kernel checks
// mode bits and POSIX ACLs (the system.posix_acl_* xattrs of the layers,
// copied up with the object) itself, as kernel overlayfs does through the
// layers' filesystems, and applies the caller's umask only where no
// default ACL replaces it. The server runs with umask 0 and creates what
// the kernel asks for.
//
// # Inode numbers
//
// st_ino = (index of the layer's filesystem) << 48 | real inode number,
// where the upper's filesystem has index 0: when all layers share one
// filesystem, st_ino is the real number, as kernel overlayfs with xino
// reports it. A copied-up object reports its origin's number (decoded
// from the origin xattr), so numbers survive copy-up and remount; a
// merged dir reports its topmost lower dir's. A copied-up file whose
// origin has several links reports its own number (copy-up broke the
// link, as with the kernel and index=off). One st_dev for the mount.
//
// # Lower name index
//
// Lookups in a dir merged from two or more lower dirs go through an
// overlay.DirIndex (overlay/index.go), built on the first lookup in the
// dir with one getdents per lower dir and kept in the node (and in the
// stack's LRU-bounded overlay.LowerIndex): a missing name costs a map
// probe at any depth, a present one an lstat of the layers that hold it.
// Layers with an on-disk index (overlay.WithSiblingIndexFiles) are not
// even listed, and their index marks the entries without overlay xattrs:
// a lookup then skips the opaque/redirect/metacopy reads of those, and
// the lstat of every merged lower dir but the top one (a dir present in
// all 128 layers costs one lstat, not 128 lstats and 256 getxattrs).
// Listings of indexed dirs take the lower names, types and inode numbers
// from the index (dir.go).
//
// # Caching
//
// Entries and attributes of lower-only objects are cached for
// Options.LowerTimeout (default 1 h); upper ones for 1 s; absent names
// for Options.NegativeTimeout (default 1 h: names appear only through the
// mount, which replaces the negative dentry). Files open with
// FOPEN_NOFLUSH (locks are kept by the kernel), lower files with
// FOPEN_KEEP_CACHE, and a read-only open of lower data is lazy: OPEN
// costs no syscall, the descriptor is opened on the first READ (a warm
// open+read+close is the OPEN and RELEASE round trips only). Upper files
// use kernel passthrough. On a writable mount lower files never do,
// because the kernel keeps one backing file per inode and requires every
// open of an inode with a backing file to use it: a write-open after
// copy-up would then write into the lower file (and a read-only fd would
// not follow the copy-up). On a mount with no upper layer nothing is
// ever copied up: lower files of at least 1 MiB are read through
// passthrough (page cache of the layer's own file: a remount reads at
// kernel speed), smaller ones open lazily as above; the choice is fixed
// per inode, so opens never mix the two io modes.
//
// The kernel's writeback cache stays off, and is no option: the kernel
// turns passthrough off on a mount with it, and it adds requests. Measured
// on this 2-vCPU machine under load, alternating with and without it in
// one run (quick harness, 4 rounds; and 3 alternating rounds of a direct
// A/B, 10k files): create-files 2.88x vs 2.94x kernel overlayfs and
// 1.7-3.0 s vs 2.5-3.8 s (a wash), untar 13x vs 9.2x kernel (ranges
// overlap: 0.78-2.2 s vs 0.47-1.7 s), rm-tree 4.4x vs 8.3x kernel and
// 1.8-3.9 s vs 7.3-11 s: with writeback cache every UNLINK is followed by
// a SETATTR (mtime) of the deleted inode, which the kernel flushes from
// its cache (and the server answers ENOENT). The notes' idle-machine
// measurement had untar 2.3x slower with it.
//
// # Request costs
//
// READDIRPLUS stays on with READDIRPLUS_AUTO (the kernel asks for it on
// the first chunk of a listing and after stats of its entries); the dir
// handle implements fs.FileLookuper so the per-entry lookup reuses the
// entry resolved for the listing (dir.go).
// Files open with FOPEN_NOFLUSH (no FLUSH round trip on close). Locks are
// left to the kernel (EnableLocks off), which is correct for one mount and
// needs no requests. CAP_HANDLE_KILLPRIV_V2 stays off: the kernel would
// then leave clearing set-id bits to the server (it drops the mode from
// the SETATTR it sends for a kill and flags WRITE instead), but go-fuse's
// node API does not pass the kill flags of WRITE and OPEN to the
// filesystem, and a passthrough write sends no WRITE at all. It would save
// one GETATTR per chown (untar: 1 of 10 requests per file), none in
// create-files. GOMAXPROCS is an option (RecommendedGOMAXPROCS).
//
// Requests the kernel sends that the server cannot avoid (Linux 6.18,
// default_permissions): after every CREATE, MKDIR, UNLINK or RMDIR the
// kernel invalidates the parent dir's attributes, and its next permission
// check on the dir sends a GETATTR. rm -rf of a lower tree is GETATTR +
// UNLINK per file; create of a file with one write is LOOKUP (negative),
// CREATE, GETXATTR security.capability (first write), RELEASE, GETATTR of
// the dir; GNU tar adds three SETATTRs (futimens, fchown, fchmod) and, for
// the chown, a GETXATTR and a GETATTR (set-id kill check). touch of a lower
// file is LOOKUP + SETATTR.
//
// Server work per request is kept small: a dir made through the mount
// knows its names (node.names), so the negative LOOKUP before each create
// needs no syscall; the mutating requests keep fds of the last few upper
// dirs they touched (dirfd.go; dropped by rmdir and rename), so Create is
// one openat on a held dir fd plus fstat on the new fd (fchown only when
// the caller's ids differ from the server's), and unlink of a lower-only
// name the kernel knows is one mknodat; SETATTR and GETATTR without a
// handle use an open handle the node holds on its upper object
// (node.held); security.capability absence is remembered per node.
//
// A SETATTR (chmod, chown, utimes) of a lower-only file is one
// metadata-only copy-up with the change applied while the copy is built
// (union.metacopyUp): the copy is created in the work dir with openat and
// given owner, xattrs, mode and times through its fd, then renamed into
// the held parent fd, whose times are put back through the same fd; about
// a dozen syscalls and no path walk in the upper layer. A metadata-only
// copy holds no data, so, like the kernel's, it is not fsynced (the kernel
// with its default metacopy=off copies the data and fsyncs it). Copy-up
// sets the owner before copying xattrs: chown clears security.capability.
//
// # Differences from kernel overlayfs
//
//   - link and rename of a lower file copy its data up (the kernel
//     writes a metacopy with a redirect).
//   - mknod of a char device 0/0 fails EPERM (it would be a whiteout).
//   - RENAME_EXCHANGE of a dir with lower contents fails EXDEV.
//
// # Locking
//
// union.cuMu serializes copy-ups and multi-step upper changes; node.mu
// guards a node's state. Order: cuMu, then one node.mu.
package fuse
