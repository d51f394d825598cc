// Package containerd adapts a strata snapshot.Store to containerd's
// snapshots.Snapshotter interface. It is the only place where strata's
// snapshot core meets containerd's types: it converts Info, Usage, Mount
// and options, and maps strata's sentinel errors to containerd's errdefs.
package containerd

import (
	"context"
	"errors"

	"github.com/containerd/containerd/v2/core/mount"
	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/errdefs"

	"github.com/stratafs/strata/snapshot"
)

// snapshotter serves a snapshot.Store as a containerd Snapshotter.
type snapshotter struct {
	st *snapshot.Store
}

var _ snapshots.Snapshotter = (*snapshotter)(nil)

// New returns a containerd Snapshotter over st. Closing the Snapshotter
// closes st.
func New(st *snapshot.Store) snapshots.Snapshotter { return &snapshotter{st: st} }

// Open opens a strata store at root and returns it as a containerd
// Snapshotter.
func Open(root string, opts ...snapshot.Option) (snapshots.Snapshotter, error) {
	st, err := snapshot.Open(root, opts...)
	if err != nil {
		return nil, mapErr(err)
	}
	return New(st), nil
}

func (s *snapshotter) Stat(ctx context.Context, key string) (snapshots.Info, error) {
	info, err := s.st.Stat(ctx, key)
	if err != nil {
		return snapshots.Info{}, mapErr(err)
	}
	return toInfo(info), nil
}

func (s *snapshotter) Update(ctx context.Context, info snapshots.Info, fieldpaths ...string) (snapshots.Info, error) {
	out, err := s.st.Update(ctx, fromInfo(info), fieldpaths...)
	if err != nil {
		return snapshots.Info{}, mapErr(err)
	}
	return toInfo(out), nil
}

func (s *snapshotter) Usage(ctx context.Context, key string) (snapshots.Usage, error) {
	u, err := s.st.Usage(ctx, key)
	if err != nil {
		return snapshots.Usage{}, mapErr(err)
	}
	return snapshots.Usage{Inodes: u.Inodes, Size: u.Size}, nil
}

func (s *snapshotter) Mounts(ctx context.Context, key string) ([]mount.Mount, error) {
	m, err := s.st.Mounts(ctx, key)
	if err != nil {
		return nil, mapErr(err)
	}
	return toMounts(m), nil
}

func (s *snapshotter) Prepare(ctx context.Context, key, parent string, opts ...snapshots.Opt) ([]mount.Mount, error) {
	o, err := fromOpts(opts)
	if err != nil {
		return nil, err
	}
	m, err := s.st.Prepare(ctx, key, parent, o...)
	if err != nil {
		return nil, mapErr(err)
	}
	return toMounts(m), nil
}

func (s *snapshotter) View(ctx context.Context, key, parent string, opts ...snapshots.Opt) ([]mount.Mount, error) {
	o, err := fromOpts(opts)
	if err != nil {
		return nil, err
	}
	m, err := s.st.View(ctx, key, parent, o...)
	if err != nil {
		return nil, mapErr(err)
	}
	return toMounts(m), nil
}

func (s *snapshotter) Commit(ctx context.Context, name, key string, opts ...snapshots.Opt) error {
	o, err := fromOpts(opts)
	if err != nil {
		return err
	}
	return mapErr(s.st.Commit(ctx, name, key, o...))
}

func (s *snapshotter) Remove(ctx context.Context, key string) error {
	return mapErr(s.st.Remove(ctx, key))
}

func (s *snapshotter) Walk(ctx context.Context, fn snapshots.WalkFunc, filters ...string) error {
	return mapErr(s.st.Walk(ctx, func(ctx context.Context, info snapshot.Info) error {
		return fn(ctx, toInfo(info))
	}, filters...))
}

// Cleanup removes dirs that no snapshot refers to (containerd's Cleaner).
func (s *snapshotter) Cleanup(ctx context.Context) error {
	return mapErr(s.st.Cleanup(ctx))
}

var _ snapshots.Cleaner = (*snapshotter)(nil)

func (s *snapshotter) Close() error { return mapErr(s.st.Close()) }

// fromOpts applies containerd's options to an Info and returns the
// equivalent strata options (labels and, for Commit, the parent).
func fromOpts(opts []snapshots.Opt) ([]snapshot.Opt, error) {
	var info snapshots.Info
	for _, o := range opts {
		if err := o(&info); err != nil {
			return nil, err
		}
	}
	var out []snapshot.Opt
	if info.Labels != nil {
		out = append(out, snapshot.WithLabels(info.Labels))
	}
	if info.Parent != "" {
		out = append(out, snapshot.WithParent(info.Parent))
	}
	return out, nil
}

func toInfo(i snapshot.Info) snapshots.Info {
	return snapshots.Info{
		Kind:    snapshots.Kind(i.Kind), // same values, see snapshot.Kind
		Name:    i.Name,
		Parent:  i.Parent,
		Labels:  i.Labels,
		Created: i.Created,
		Updated: i.Updated,
	}
}

func fromInfo(i snapshots.Info) snapshot.Info {
	return snapshot.Info{
		Kind:    snapshot.Kind(i.Kind),
		Name:    i.Name,
		Parent:  i.Parent,
		Labels:  i.Labels,
		Created: i.Created,
		Updated: i.Updated,
	}
}

func toMounts(ms []snapshot.Mount) []mount.Mount {
	out := make([]mount.Mount, len(ms))
	for i, m := range ms {
		out[i] = mount.Mount{Type: m.Type, Source: m.Source, Options: m.Options}
	}
	return out
}

// mapErr keeps err's message and chain and adds the errdefs class that
// matches strata's sentinel, so errdefs.IsNotFound etc. work.
func mapErr(err error) error {
	if err == nil {
		return nil
	}
	for _, m := range []struct{ strata, ctrd error }{
		{snapshot.ErrNotFound, errdefs.ErrNotFound},
		{snapshot.ErrAlreadyExists, errdefs.ErrAlreadyExists},
		{snapshot.ErrInvalidArgument, errdefs.ErrInvalidArgument},
		{snapshot.ErrFailedPrecondition, errdefs.ErrFailedPrecondition},
		{snapshot.ErrNotImplemented, errdefs.ErrNotImplemented},
		{snapshot.ErrLocked, errdefs.ErrUnavailable},
		{snapshot.ErrUnsupportedFormat, errdefs.ErrFailedPrecondition},
		{snapshot.ErrClosed, errdefs.ErrUnavailable},
	} {
		if errors.Is(err, m.strata) {
			return &classified{err: err, class: m.ctrd}
		}
	}
	return err
}

// classified is err, also classified as class for errors.Is.
type classified struct {
	err   error
	class error
}

func (c *classified) Error() string   { return c.err.Error() }
func (c *classified) Unwrap() []error { return []error{c.err, c.class} }
