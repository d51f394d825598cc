// Package snapshot is strata's snapshot store: a set of layer directories
// at one root, with transactional metadata, and the containerd snapshot
// semantics on top (Prepare, View, Commit, Remove, Stat, Update, Usage,
// Walk, Mounts, Cleanup).
//
// The contract (types, kinds, what each operation promises) lives in
// snapshotter.go; this file describes the model and the on-disk layout.
//
// # Glossary
//
//   - key: the name of a snapshot that is not committed (an active snapshot
//     or a view). Keys and names share one namespace in a store: a key may
//     not equal the name of a committed snapshot, and vice versa.
//   - name: the name of a committed snapshot, chosen at Commit. Once
//     committed, a snapshot never changes; it can only be removed.
//   - parent: the committed snapshot a new snapshot is built on, given as
//     its name. A snapshot has at most one parent; following parents gives
//     its chain, from itself down to a snapshot without parent. The empty
//     string means "no parent".
//   - chain ID: the OCI identity of a layer chain (image-spec config.md,
//     "ChainID"): chain(L0) = diffID(L0), chain(L0..n) = sha256 of
//     chain(L0..n-1) + " " + diffID(Ln); [ChainID] computes it. Clients
//     that unpack images use it as the name of committed snapshots, so
//     equal chains are shared. The store itself treats names as opaque
//     strings; only the import helpers ([Store.ImportLayer],
//     [Store.ImportImage]) name what they commit by chain ID.
//   - kinds: [KindActive] (writable; becomes committed with Commit),
//     [KindView] (read-only, cannot be committed) and [KindCommitted]
//     (read-only, can be a parent).
//
// # Importing a layer
//
// To unpack layer L (diff ID D) on top of the chain named P:
//
//	key := "extract-" + random
//	mounts, err := st.Prepare(ctx, key, P)   // active snapshot on P
//	// apply the layer tar to the active snapshot: either mount mounts and
//	// untar into them, or, as [Store.Import] does, write the layer's own
//	// directory directly (kernel overlayfs format: whiteouts as 0/0 char
//	// devices), which needs no mount at all.
//	err = st.Commit(ctx, chainID(P, D), key)  // now a committed layer
//
// If the commit fails with ErrAlreadyExists, another client unpacked the
// same chain first: Remove the key and use the existing name.
//
// [Store.ImportTar] does all of this in one call with snapshot/archive,
// checking the diff ID while it reads:
//
//	info, sum, err := st.ImportTar(ctx, chainID(P, D), P, layerTar,
//		[]archive.ApplyOption{archive.WithExpectedDiffID(D)})
//
// When the diff ID is not known before reading (a bare layer file),
// [Store.ImportLayer] unpacks into a temporary snapshot and commits it
// under the chain ID it computed, labelled with [LabelDiffID] and
// [LabelDigest]; a chain ID already present is kept (Existed):
//
//	l, err := st.ImportLayer(ctx, "app.tar.zst", P, LayerSpec{}, progress)
//	// l.ChainID == ChainID(P, l.DiffID)
//
// [Store.ImportImage] does it for a whole OCI image layout: index.json
// (by tag, or the only manifest; a nested index gives linux/GOARCH), the
// manifest, the config's diff IDs, then each layer blob in order through
// ImportLayer with its blob digest and diff ID checked:
//
//	img, err := st.ImportImage(ctx, "./alpine-oci", "3.20",
//		WithImageProgress(func(i, n int, d Descriptor) LayerProgress { ... }))
//	// img.ChainID: the top layer; Prepare containers on it.
//
// [Store.Diff] writes a snapshot's own changes back as a layer tar.
//
// # Running a container
//
// To run a container on the image whose top layer has chain ID C:
//
//	mounts, err := st.Prepare(ctx, containerID, C)
//	// mount mounts at the container's rootfs; run; unmount.
//	// Keep the changes as a new layer: st.Commit(ctx, newName, containerID)
//	// or throw them away: st.Remove(ctx, containerID)
//
// A read-only rootfs (or a scan of an image) uses View instead of Prepare:
// it returns read-only mounts of C's chain and can only be removed.
//
// # On-disk layout
//
//	<root>/metadata.db          bbolt: snapshots by key, ids, parents, labels, format
//	<root>/owner                pid and command of the process that has the store open
//	<root>/snapshots/<id>/fs    the layer: upper dir while active, lower dir once committed
//	<root>/snapshots/<id>/work  overlay work dir (active snapshots only)
//	<root>/staging/             dirs being built; emptied by Open and Cleanup
//	<root>/mounts/<id>          FUSE backend: the FUSE mount of a snapshot (fuse.go)
//
// Ids are short decimal numbers, as in containerd, so that a mount of a long
// chain keeps its lowerdir option short. A new snapshot's dirs are built
// under staging/ and renamed to snapshots/<id> inside the metadata
// transaction that records it, so a crash leaves at most an orphan dir that
// Cleanup removes, never a record without its dir. Dirs of removed
// snapshots are deleted after the transaction commits.
//
// # Format
//
// Layers are kernel overlayfs layers as the kernel writes them with the
// options of overlay.FormatOptions (redirect_dir=on, metacopy=on,
// index=off, xino=auto). The metadata records a format version and these
// options; Mounts uses the recorded options, and a store with a newer
// format version than this code knows is refused with ErrUnsupportedFormat.
//
// # Durability
//
// What is flushed, and when:
//
//   - Metadata: every change is one bbolt transaction, and bbolt fsyncs the
//     database file when the transaction commits (the store does not set
//     NoSync). A snapshot exists once its transaction has committed, and
//     not before.
//   - Committed layers: [Store.Commit] (and so [Store.ImportTar], which
//     commits through it) makes the layer's files durable before the
//     Commit transaction, so a committed layer's files, and the rename of
//     its dir into snapshots/, are on disk before the metadata says it is
//     committed: an fsync of each file and dir when the layer has at most
//     256 inodes (a typical container commit), else one syncfs of the
//     filesystem (an imported layer). This holds for layers written through
//     a mount too (containerd's overlay snapshotter's Commit syncs nothing,
//     so after a power loss it can name a committed layer whose files were
//     never written back).
//   - Copy-up (overlay.Stack.CopyUp): file data is fsynced in the work dir
//     before the rename into the upper layer (unless the stack is
//     volatile), so the rename can never publish a file whose data is
//     missing.
//   - The owner file and dirs of removed snapshots are not synced: they
//     are advisory or garbage.
//
// Why that is enough: every change that builds or drops dirs orders them
// around its transaction (build under staging/, rename into snapshots/ in
// the transaction; drop from the metadata first, then move the dir to
// staging/ and delete it), so a crash at any point leaves at most dirs
// that no record names, a work dir of a committed snapshot, or the
// temporary active snapshot of an unfinished Import, never a record
// without its layer or a committed layer with partial content. Open, which
// runs when nothing can be in flight, removes all three (Cleanup plus the
// unfinished imports), so Check is clean after a reopen. Copy-up leaves
// at most a temporary in the work dir, which overlay.Stack.CleanWork
// removes. internal/reliability's crash harness SIGKILLs a process working
// on a store at random points and checks exactly this after each kill;
// power loss (which can also drop unsynced page cache) is covered by the
// syncs above, not by a test.
//
// # Ownership
//
// One process owns a store at a time. Open takes bbolt's file lock with a
// short timeout and writes the owner file; a second Open fails fast with
// ErrLocked and names the owner. Within the owning process a Store is safe
// for concurrent use.
package snapshot
