//go:build linux

package fuse

import (
	"os/exec"
	"testing"

	"github.com/stratafs/strata/internal/testutil"
)

// TestUmaskAsKernel: files, dirs and fifos created through the mount get
// the mode the caller asked for under the caller's umask, whatever the
// server's own umask, on FUSE exactly as on kernel overlayfs.
func TestUmaskAsKernel(t *testing.T) {
	testutil.RequireFUSE(t)
	testutil.RequireOverlay(t)
	modes := map[string]string{}
	for _, be := range []string{"kernel", "fuse"} {
		l := newCrossLayers(t)
		var root string
		if be == "fuse" {
			root, _ = mountFUSE(t, l)
		} else {
			root, _ = mountKernel(t, l)
		}
		for _, um := range []string{"000", "027"} {
			script := "umask " + um + " && cd " + root + " && touch f" + um + " && mkdir d" + um + " && mkfifo p" + um +
				" && stat -c '%a %n' f" + um + " d" + um + " p" + um
			out, err := exec.Command("sh", "-c", script).CombinedOutput()
			if err != nil {
				t.Fatalf("%s: %s: %v %s", be, script, err, out)
			}
			modes[be] += string(out)
		}
	}
	if modes["fuse"] != modes["kernel"] {
		t.Errorf("modes on FUSE:\n%s\non kernel overlayfs:\n%s", modes["fuse"], modes["kernel"])
	}
}
