//go:build linux

package overlaytest

import (
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
)

// Layers are the layer dirs of one union mount, in kernel overlayfs's
// on-disk format with overlay metadata in trusted.overlay.* xattrs.
type Layers struct {
	// Lowers are the read-only layers, topmost first. At least one.
	Lowers []string
	// Upper is the writable layer; "" mounts the union read-only.
	Upper string
	// Work is the work dir beside Upper (same filesystem, initially
	// empty); "" when Upper is "". A backend that needs no work dir may
	// ignore it, but must not put anything of the union's into it that
	// another backend would need.
	Work string
}

// ReadOnly reports whether the layers have no upper layer.
func (l Layers) ReadOnly() bool { return l.Upper == "" }

// Backend mounts layer stacks. It is the one thing a union implementation
// provides to be checked by this suite.
type Backend interface {
	// Name names the backend in logs, e.g. "kernel-overlayfs".
	Name() string
	// Mount mounts l on a fresh mount point and returns the mount. It
	// fails t (t.Fatal) if it cannot mount, and registers a t.Cleanup
	// that unmounts if the mount is still up when t ends, so that no
	// mount outlives its test even when the check fails half-way.
	Mount(t *testing.T, l Layers) Mounted
}

// Mounted is one mount made by a Backend.
type Mounted interface {
	// Root is the mount point: the root dir of the union. It stays the
	// same across Remount.
	Root() string
	// Unmount unmounts, so that the layer dirs can be inspected on disk;
	// everything written through the union must be in the upper dir once
	// it returns. Calling it when not mounted does nothing. It fails t on
	// error.
	Unmount(t *testing.T)
	// Remount mounts the same layers again at Root (after unmounting
	// first if still mounted), as a fresh mount with no state kept from
	// the previous one. It fails t on error.
	Remount(t *testing.T)
}

// Quirk names a behaviour in which backends may legitimately differ. A
// check that meets one accepts each of the allowed behaviours and
// records which it saw (see the package doc).
type Quirk string

const (
	// HardlinkBreaksOnCopyUp: copying up one name of a hard-linked lower
	// file gives that name its own inode; the other names keep showing
	// the old lower inode and data. Kernel overlayfs does this with
	// index=off (strata's format); the FUSE backend need not.
	HardlinkBreaksOnCopyUp Quirk = "hardlink-breaks-on-copy-up"
	// RenameDirEXDEV: rename(2) of a dir that exists in a lower layer
	// fails with EXDEV (kernel overlayfs without redirect_dir). Without
	// the quirk the rename succeeds and the dir's content follows it.
	RenameDirEXDEV Quirk = "rename-dir-exdev"
	// RenameDirByRedirect: a renamed lower dir is stored in the upper
	// layer as a dir with the overlay "redirect" xattr (kernel
	// redirect_dir=on) rather than as an opaque full copy.
	RenameDirByRedirect Quirk = "rename-dir-by-redirect"
	// MetadataOnlyCopyUp: a change of metadata only (chmod, chown, utimes,
	// setxattr, link, rename) copies up just the metadata: the upper file
	// is a stub with the overlay "metacopy" xattr and the data stays in
	// the lower layer (kernel metacopy=on).
	MetadataOnlyCopyUp Quirk = "metadata-only-copy-up"
	// CopyUpFillsSmallHoles: a data copy-up of a sparse file keeps only
	// the big holes (kernel overlayfs copies in 1 MiB chunks and skips
	// only chunks that are all hole), so the upper file's extents differ
	// from the lower file's. Holes of whole aligned MiBs must stay holes
	// in every backend.
	CopyUpFillsSmallHoles Quirk = "copy-up-fills-small-holes"
	// XattrWhiteoutIgnoresMarkerOnLookup: lookup treats an empty file
	// with the overlay "whiteout" xattr as a whiteout even when its parent
	// dir lacks the opaque="x" marker, while readdir still lists the name
	// (kernel overlayfs 6.18: lstat of the listed name fails ENOENT).
	// Without the quirk the file is an ordinary empty file to both.
	XattrWhiteoutIgnoresMarkerOnLookup Quirk = "xattr-whiteout-without-marker-hides-on-lookup"
	// StaleMmapAfterCopyUp: a read-only MAP_SHARED mapping of a lower
	// file keeps showing the lower data after the file is copied up and
	// written (kernel overlayfs, documented as non-standard behaviour).
	StaleMmapAfterCopyUp Quirk = "stale-mmap-after-copy-up"
	// StaleReadAfterCopyUp: an fd opened read-only before a copy-up keeps
	// reading the lower data afterwards.
	StaleReadAfterCopyUp Quirk = "stale-read-after-copy-up"
	// InoChangesOnCopyUp: st_ino of a lower file changes when it is
	// copied up.
	InoChangesOnCopyUp Quirk = "ino-changes-on-copy-up"
	// DirInoChangesOnCopyUp: st_ino of a lower dir changes when it is
	// copied up (e.g. by creating a file in it).
	DirInoChangesOnCopyUp Quirk = "dir-ino-changes-on-copy-up"
	// OpaqueOnMkdirOverWhiteout: mkdir over a name whited out in a lower
	// layer marks the new upper dir opaque even though the lower whiteout
	// alone would hide the older dir.
	OpaqueOnMkdirOverWhiteout Quirk = "opaque-on-mkdir-over-lower-whiteout"
)

// QuirkSet says, for each quirk a backend pins, whether it has it.
// Quirks not in the set are accepted either way.
type QuirkSet map[Quirk]bool

// Quirker is implemented by backends that pin their quirks: a check then
// fails when the backend behaves otherwise than pinned.
type Quirker interface {
	Quirks() QuirkSet
}

// Skipper is implemented by backends that cannot pass some checks yet;
// Run skips those, with the reason given.
type Skipper interface {
	// Skips maps check names (keys of All) to why they are skipped.
	Skips() map[string]string
}

// All holds every check, by name.
var All = map[string]func(t *testing.T, b Backend){}

// register adds checks to All; it panics on a duplicate name.
func register(checks map[string]func(*testing.T, Backend)) {
	for name, f := range checks {
		if _, dup := All[name]; dup {
			panic("overlaytest: duplicate check " + name)
		}
		All[name] = f
	}
}

// Run runs every check in All against b, each as a subtest, in name order,
// and logs the quirks observed.
func Run(t *testing.T, b Backend) {
	r := &recorder{Backend: b}
	names := make([]string, 0, len(All))
	for name := range All {
		names = append(names, name)
	}
	slices.Sort(names)
	var skips map[string]string
	if s, ok := b.(Skipper); ok {
		skips = s.Skips()
	}
	for _, name := range names {
		t.Run(name, func(t *testing.T) {
			if reason, ok := skips[name]; ok {
				t.Skipf("backend %s skips %s: %s", b.Name(), name, reason)
			}
			All[name](t, r)
		})
	}
	t.Log(r.summary())
}

// recorder wraps a Backend and collects the quirks checks observe on it.
type recorder struct {
	Backend
	mu   sync.Mutex
	seen map[Quirk]map[bool][]string // quirk -> observed value -> "check: detail"
}

func (r *recorder) Quirks() QuirkSet {
	if q, ok := r.Backend.(Quirker); ok {
		return q.Quirks()
	}
	return nil
}

func (r *recorder) record(q Quirk, has bool, where string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.seen == nil {
		r.seen = map[Quirk]map[bool][]string{}
	}
	if r.seen[q] == nil {
		r.seen[q] = map[bool][]string{}
	}
	r.seen[q][has] = append(r.seen[q][has], where)
}

func (r *recorder) summary() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var b strings.Builder
	fmt.Fprintf(&b, "quirks observed on %s:", r.Name())
	qs := make([]Quirk, 0, len(r.seen))
	for q := range r.seen {
		qs = append(qs, q)
	}
	slices.Sort(qs)
	for _, q := range qs {
		for _, v := range []bool{true, false} {
			if w := r.seen[q][v]; len(w) > 0 {
				fmt.Fprintf(&b, "\n  %s=%v in %d place(s): %s", q, v, len(w), strings.Join(w, "; "))
			}
		}
	}
	if len(qs) == 0 {
		b.WriteString(" none")
	}
	return b.String()
}

// observe records that the backend under test shows quirk q (has) or not,
// with detail saying what was seen. It fails t if the backend pins q to
// the other value.
func observe(t *testing.T, b Backend, q Quirk, has bool, detail string) {
	t.Helper()
	t.Logf("quirk %s=%v: %s", q, has, detail)
	if r, ok := b.(*recorder); ok {
		r.record(q, has, t.Name()+": "+detail)
	}
	var pinned QuirkSet
	if qr, ok := b.(Quirker); ok {
		pinned = qr.Quirks()
	}
	if want, ok := pinned[q]; ok && want != has {
		t.Errorf("backend %s pins quirk %s=%v, but here it behaves as %s=%v (%s)", b.Name(), q, want, q, has, detail)
	}
}
