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
// # Request costs
//
// READDIRPLUS stays on with READDIRPLUS_AUTO (the kernel asks for it on
// the first chunk of a listing and after stats of its entries); the dir
// handle implements fs.FileLookuper so the per-entry lookup reuses the
// entry resolved for the listing (dir.go).
// Files open with FOPEN_NOFLUSH (no FLUSH round trip on close). Locks are
// left to the kernel (EnableLocks off), which is correct for one mount and
// needs no requests. CAP_HANDLE_KILLPRIV_V2 stays off: the kernel would
// then leave clearing set-id bits to the server, but go-fuse's node API
// does not pass the kill flags of WRITE and OPEN to the filesystem.
// GOMAXPROCS is an option (RecommendedGOMAXPROCS).
//
// Server work per request is kept small: a dir made through the mount
// knows its names (node.names), so the negative LOOKUP before each create
// needs no syscall; Create is one openat on an O_PATH fd of the upper dir
// plus fchown/fstat on the new fd; SETATTR and GETATTR without a handle
// use an open handle the node holds on its upper object (node.held);
// security.capability absence is remembered per node; unlink of a
// lower-only name the kernel knows is one mknodat.
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
