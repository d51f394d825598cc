//go:build linux

package fuse

import (
	"bytes"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/stratafs/strata/internal/testutil"
	"github.com/stratafs/strata/overlay/overlaytest"
)

// TestReadOnlyMountPassthrough: on a mount with no upper layer, big
// lower files are read through kernel passthrough and small ones through
// lazy cached opens; concurrent opens of one file (which never mix the
// two io modes), seeks and repeated reads all return the lower data.
func TestReadOnlyMountPassthrough(t *testing.T) {
	testutil.RequireFUSE(t)
	lo, lo2 := t.TempDir(), t.TempDir()
	big := make([]byte, passthroughMin+12345)
	r := rand.New(rand.NewPCG(1, 2))
	for i := range big {
		big[i] = byte(r.Uint32())
	}
	small := []byte("small file\n")
	for name, data := range map[string][]byte{"big": big, "small": small} {
		if err := os.WriteFile(filepath.Join(lo, name), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	m := backend{}.Mount(t, overlaytest.Layers{Lowers: []string{lo, lo2}})
	for name, want := range map[string][]byte{"big": big, "small": small} {
		p := filepath.Join(m.Root(), name)
		var wg sync.WaitGroup
		for i := 0; i < 4; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				f, err := os.Open(p)
				if err != nil {
					t.Error(err)
					return
				}
				defer f.Close()
				got, err := io.ReadAll(f)
				if err != nil || !bytes.Equal(got, want) {
					t.Errorf("%s: read %d bytes (%v), want %d", name, len(got), err, len(want))
				}
				off := int64(len(want) / 3)
				buf := make([]byte, 100)
				n, err := f.ReadAt(buf, off)
				if (err != nil && err != io.EOF) || !bytes.Equal(buf[:n], want[off:min(int(off)+100, len(want))]) {
					t.Errorf("%s: pread at %d: %d bytes, %v", name, off, n, err)
				}
			}()
		}
		wg.Wait()
	}
	// the io mode was chosen by size, once per inode
	srv := m.(*fuseMount).srv
	for name, want := range map[string]int32{"big": 1, "small": -1} {
		ch := srv.root.GetChild(name)
		if ch == nil {
			t.Fatalf("%s: no inode", name)
		}
		if got := ch.Operations().(*node).roPassthrough.Load(); got != want {
			t.Errorf("%s: roPassthrough %d, want %d (1: passthrough, -1: cached)", name, got, want)
		}
	}
	// the mount stays read-only
	if err := os.WriteFile(filepath.Join(m.Root(), "big"), []byte("x"), 0o644); err == nil {
		t.Error("write to a read-only mount succeeded")
	}
}
