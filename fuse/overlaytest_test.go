//go:build linux

package fuse

import (
	"os"
	"testing"

	"github.com/stratafs/strata/internal/testutil"
	"github.com/stratafs/strata/overlay"
	"github.com/stratafs/strata/overlay/overlaytest"
)

// backend runs strata's FUSE filesystem for the overlaytest suite.
type backend struct{ opts Options }

func (backend) Name() string { return "strata-fuse" }

// Quirks pins how the FUSE backend behaves where backends may differ.
func (backend) Quirks() overlaytest.QuirkSet {
	return overlaytest.QuirkSet{
		overlaytest.RenameDirEXDEV:        false,
		overlaytest.RenameDirByRedirect:   true,
		overlaytest.MetadataOnlyCopyUp:    false, // strata copies data up on chmod etc.
		overlaytest.InoChangesOnCopyUp:    false, // origin xattr
		overlaytest.DirInoChangesOnCopyUp: false,
		overlaytest.CopyUpFillsSmallHoles: false, // SEEK_DATA/SEEK_HOLE copy
		overlaytest.StaleReadAfterCopyUp:  true,  // fds opened before copy-up keep the lower file
	}
}

type fuseMount struct {
	layers  overlaytest.Layers
	target  string
	opts    Options
	srv     *Server
	mounted bool
}

func (b backend) Mount(t *testing.T, l overlaytest.Layers) overlaytest.Mounted {
	t.Helper()
	m := &fuseMount{layers: l, target: t.TempDir(), opts: b.opts}
	m.Remount(t)
	t.Cleanup(func() { m.Unmount(t) })
	return m
}

func (m *fuseMount) Root() string { return m.target }

func (m *fuseMount) Unmount(t *testing.T) {
	t.Helper()
	if !m.mounted {
		return
	}
	if err := m.srv.Unmount(); err != nil {
		t.Errorf("fuse backend: %v", err)
	}
	m.srv.Wait()
	m.mounted = false
}

func (m *fuseMount) Remount(t *testing.T) {
	t.Helper()
	m.Unmount(t)
	var opts []overlay.StackOption
	if m.layers.Upper != "" {
		opts = append(opts, overlay.WithUpper(m.layers.Upper, m.layers.Work))
	}
	s, err := overlay.NewStack(m.layers.Lowers, opts...)
	if err != nil {
		t.Fatalf("fuse backend: %v", err)
	}
	o := m.opts
	o.Debug = o.Debug || testing.Verbose() && debugFUSE
	srv, err := Mount(s, m.target, o)
	if err != nil {
		t.Fatalf("fuse backend: %v", err)
	}
	m.srv, m.mounted = srv, true
}

// debugFUSE turns on request logging under -v (flip while debugging).
var debugFUSE = os.Getenv("STRATA_FUSE_DEBUG") == "1"

func TestOverlaytest(t *testing.T) {
	testutil.RequireFUSE(t)
	overlaytest.Run(t, backend{})
}
