//go:build linux

package fuse

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/stratafs/strata/internal/testutil"
)

// TestKillSuidAsKernel: a write, append or truncate by an unprivileged
// user clears set-user-ID and set-group-ID bits, on upper files and on
// lower files copied up by the write, on FUSE exactly as on kernel
// overlayfs. (CAP_HANDLE_KILLPRIV_V2 stays off: go-fuse's node API does
// not pass the kill flags of WRITE and OPEN to the filesystem.)
func TestKillSuidAsKernel(t *testing.T) {
	testutil.RequireFUSE(t)
	testutil.RequireOverlay(t)
	setpriv, err := exec.LookPath("setpriv")
	if err != nil {
		t.Skip("needs setpriv to act as an unprivileged user")
	}
	ops := map[string]string{"s1": "echo y >> s1", "s2": "truncate -s 0 s2", "s3": "echo z > s3", "a": "echo q >> a"}
	modes := map[string]map[string]uint32{}
	for _, be := range []string{"fuse", "kernel"} {
		l := newCrossLayers(t)
		root := mountOn(t, be, l)
		if err := os.Chmod(filepath.Dir(root), 0o755); err != nil {
			t.Fatal(err)
		}
		modes[be] = map[string]uint32{}
		for n, cmd := range ops {
			p := filepath.Join(root, n)
			if n != "a" { // "a" is a lower file
				if err := os.WriteFile(p, []byte("x"), 0o755); err != nil {
					t.Fatal(err)
				}
			}
			if err := os.Chown(p, 1000, 1000); err != nil {
				t.Fatal(err)
			}
			if err := unix.Chmod(p, 0o6775); err != nil {
				t.Fatal(err)
			}
			c := exec.Command(setpriv, "--reuid=1000", "--regid=1000", "--clear-groups", "sh", "-c", "cd "+root+" && "+cmd)
			if out, err := c.CombinedOutput(); err != nil {
				t.Fatalf("%s: %s: %v %s", be, cmd, err, out)
			}
			var st unix.Stat_t
			if err := unix.Stat(p, &st); err != nil {
				t.Fatal(err)
			}
			modes[be][n] = st.Mode
		}
	}
	for n := range ops {
		if modes["fuse"][n] != modes["kernel"][n] || modes["fuse"][n]&0o6000 != 0 {
			t.Errorf("%s (%s): mode %o on FUSE, %o on kernel overlayfs; want set-id bits cleared",
				n, ops[n], modes["fuse"][n], modes["kernel"][n])
		}
	}
}
