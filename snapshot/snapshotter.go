package snapshot

import (
	"context"
	"fmt"
	"io"
	"maps"
	"time"
)

// This file is the contract of the store: its types and what each
// operation promises. The implementation is in store.go and ops.go.
//
// Semantics follow containerd's core/snapshots.Snapshotter so that the
// adapter in snapshot/containerd is a thin conversion:
//
//   - Prepare(key, parent): a new active snapshot; parent "" or committed.
//   - View(key, parent): a new read-only view; parent "" or committed.
//   - Commit(name, key): active key becomes committed name (key is gone).
//     Labels are replaced by the commit's labels, not inherited. An active
//     snapshot without parent may be given one at commit (WithParent): a
//     rebase of its contents onto that parent. Changing an existing parent
//     is ErrInvalidArgument.
//   - Remove(key): any kind; a committed snapshot with children is refused
//     with ErrFailedPrecondition.
//   - Stat, Update (labels only), Usage, Walk (containerd filter syntax over
//     kind, name, parent, labels.<key>), Mounts, Cleanup, Check, Close.
//
// Errors wrap one of the sentinels in errors.go and name the operation and
// key: `prepare "c1": parent "sha256:ab…": not found`.

// Kind is the kind of a snapshot.
type Kind uint8

// Kinds. The values match containerd's snapshots.Kind.
const (
	KindUnknown   Kind = iota
	KindView           // read-only, never committed
	KindActive         // writable, may be committed
	KindCommitted      // read-only, may be a parent
)

// String returns "view", "active", "committed" or "unknown".
func (k Kind) String() string {
	switch k {
	case KindView:
		return "view"
	case KindActive:
		return "active"
	case KindCommitted:
		return "committed"
	}
	return "unknown"
}

// ParseKind parses the String form of a Kind; other strings give KindUnknown.
func ParseKind(s string) Kind {
	switch s {
	case "view":
		return KindView
	case "active":
		return KindActive
	case "committed":
		return KindCommitted
	}
	return KindUnknown
}

// Info describes a snapshot.
type Info struct {
	Kind    Kind
	Name    string // the key, or the name of a committed snapshot
	Parent  string // name of the committed parent, "" if none
	Labels  map[string]string
	Created time.Time // creation, or commit for committed snapshots (UTC)
	Updated time.Time // last change of Info (UTC)
}

// Usage is the disk usage of one snapshot's own layer (not its parents).
// Hard-linked files count once; Size counts allocated blocks, as du does.
type Usage struct {
	Inodes int64
	Size   int64
}

// Add adds other to u.
func (u *Usage) Add(other Usage) {
	u.Inodes += other.Inodes
	u.Size += other.Size
}

// Mount is one mount to perform, in order, to assemble a snapshot: the
// arguments of mount(8) (type, source, -o options). Paths are absolute.
type Mount struct {
	Type    string   // "bind" or "overlay"
	Source  string   // a dir for "bind", "overlay" for overlay
	Options []string // e.g. "ro", "rbind", "lowerdir=…", "redirect_dir=on"
}

// Opt sets fields of the Info of a new or committed snapshot.
type Opt func(*Info) error

// WithLabels adds labels to the snapshot.
func WithLabels(labels map[string]string) Opt {
	return func(i *Info) error {
		if i.Labels == nil {
			i.Labels = make(map[string]string, len(labels))
		}
		maps.Copy(i.Labels, labels)
		return nil
	}
}

// WithParent sets the parent at Commit (rebase of an active snapshot that
// has no parent). Ignored by Prepare and View, which take the parent as an
// argument.
func WithParent(parent string) Opt {
	return func(i *Info) error {
		i.Parent = parent
		return nil
	}
}

// WalkFunc is called by Walk for each matching snapshot. Returning an
// error stops the walk with that error.
type WalkFunc func(context.Context, Info) error

// ApplyFunc writes a layer read from r into dir, the empty upper dir of an
// active snapshot, in strata's on-disk format (kernel overlayfs whiteouts
// and opaque markers). snapshot/archive.Apply has this shape.
type ApplyFunc func(ctx context.Context, dir string, r io.Reader) error

// Backend selects how Mounts assembles a snapshot.
type Backend int

const (
	// BackendKernel: bind and kernel overlayfs mounts (the default).
	BackendKernel Backend = iota
	// BackendFUSE: strata's FUSE filesystem serving the layer stack, one
	// detached server per snapshot that needs a union; Mounts returns a
	// bind mount of its mount point (see fuse.go).
	BackendFUSE
)

// String returns "kernel" or "fuse".
func (b Backend) String() string {
	switch b {
	case BackendKernel:
		return "kernel"
	case BackendFUSE:
		return "fuse"
	}
	return fmt.Sprintf("backend(%d)", int(b))
}

// ParseBackend parses "kernel" or "fuse".
func ParseBackend(s string) (Backend, error) {
	switch s {
	case "kernel":
		return BackendKernel, nil
	case "fuse":
		return BackendFUSE, nil
	}
	return 0, fmt.Errorf("backend %q: %w (want kernel or fuse)", s, ErrInvalidArgument)
}
