package reliability

import (
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/stratafs/strata/internal/testutil"
)

// TestReadOnlyFDSeesCopyUp: an fd opened read-only on a lower file before
// another fd's write copies the file up reads the new data, as on kernel
// overlayfs since Linux 4.19 (the stacked file re-opens the upper file).
//
// Regression: strata FUSE gave a read-only open of a lower file a
// descriptor on the lower file and kept reading it after a copy-up (old
// content, old size, a short read when the file grew); the handle now
// follows the copy-up (fuse/file.go, file.follow).
func TestReadOnlyFDSeesCopyUp(t *testing.T) {
	testutil.RequireFUSE(t)
	testutil.RequireOverlay(t)
	cases := []struct {
		name    string
		preread bool
		off     int64
		data    string
	}{
		{"overwrite, no read before", false, 0, "NEW"},
		{"overwrite, read before", true, 0, "NEW"},
		{"extend, no read before", false, 8, "TAIL"},
		{"extend, read before", true, 8, "TAIL"},
	}
	for _, backend := range []string{"kernel", "fuse"} {
		t.Run(backend, func(t *testing.T) {
			sp := layerDirs(t, "", 1)
			for _, c := range cases {
				writeFile(t, filepath.Join(sp.Lowers[0], c.name), []byte("old\n"))
			}
			if backend == "kernel" {
				mountKernel(t, sp)
			} else {
				mountFUSEChild(t, sp)
			}
			for _, c := range cases {
				p := filepath.Join(sp.Target, c.name)
				r, err := os.Open(p)
				if err != nil {
					t.Fatal(err)
				}
				buf := make([]byte, 64)
				if c.preread {
					r.ReadAt(buf, 0)
				}
				w, err := os.OpenFile(p, os.O_WRONLY, 0)
				if err != nil {
					t.Fatal(err)
				}
				if _, err := w.WriteAt([]byte(c.data), c.off); err != nil {
					t.Fatal(err)
				}
				w.Close()
				n, _ := unix.Pread(int(r.Fd()), buf, 0)
				r.Close()
				want, _ := os.ReadFile(p)
				if string(buf[:max(n, 0)]) != string(want) {
					t.Errorf("%s: %s: read-only fd opened before copy-up reads %q, the file holds %q", backend, c.name, buf[:max(n, 0)], want)
				}
			}
		})
	}
}
