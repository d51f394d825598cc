package overlay

import (
	"testing"

	"github.com/stratafs/strata/internal/testutil"
)

func TestProbe(t *testing.T) {
	testutil.RequireOverlay(t)
	f, err := Probe()
	if err != nil {
		t.Fatalf("Probe: %v", err)
	}
	t.Logf("features: %s", f)
	for _, n := range f.Notes {
		t.Logf("note: %s", n)
	}
	if f.LowerdirPlus && !f.NewMountAPI {
		t.Errorf("lowerdir+ without the new mount API: %s", f)
	}
	if f.LayerFD && !f.LowerdirPlus {
		t.Errorf("layer fds without lowerdir+: %s", f)
	}
	if !f.Index {
		t.Errorf("index=off unsupported; every overlayfs since 4.13 knows it: %s", f)
	}
	if f.PageSize < 4096 {
		t.Errorf("page size %d", f.PageSize)
	}
	dirFeats, err := ProbeDir(t.TempDir())
	if err != nil {
		t.Fatalf("ProbeDir: %v", err)
	}
	if dirFeats.String() != f.String() {
		// Same filesystem (both under os.TempDir), same answers.
		t.Errorf("ProbeDir = %s, Probe = %s", dirFeats, f)
	}
	again, err := Probe()
	if err != nil || again.String() != f.String() {
		t.Errorf("second Probe = %s, %v; want the cached %s", again, err, f)
	}
}
