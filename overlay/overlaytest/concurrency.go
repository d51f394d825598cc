//go:build linux

package overlaytest

import (
	"bytes"
	"fmt"
	"os"
	"sync"
	"testing"

	"golang.org/x/sys/unix"
)

func init() {
	register(map[string]func(*testing.T, Backend){
		"ConcurrentCopyUp":   ConcurrentCopyUp,
		"OpenFdAcrossCopyUp": OpenFdAcrossCopyUp,
	})
}

// ConcurrentCopyUp: many writers open the same lower file at once; the
// file is copied up once and every write lands in that one copy.
func ConcurrentCopyUp(t *testing.T, b Backend) {
	e := newEnv(t, b, 1, false)
	const n, chunk = 8, 4096
	e.L(0).file("d/f", string(bytes.Repeat([]byte("."), n*chunk)))
	for i := range n {
		e.L(0).file(fmt.Sprintf("d/g%d", i), "lower")
	}
	e.mount()

	var wg sync.WaitGroup
	errs := make(chan error, 2*n)
	for i := range n {
		wg.Go(func() {
			f, err := os.OpenFile(e.p("d/f"), os.O_WRONLY, 0)
			if err != nil {
				errs <- err
				return
			}
			defer closeFile(t, f)
			if _, err := f.WriteAt(bytes.Repeat([]byte{byte('0' + i)}, chunk), int64(i*chunk)); err != nil { //nolint:gosec // i < n = 8
				errs <- err
			}
		})
		// Meanwhile, copy-ups of siblings race for the shared parent.
		wg.Go(func() {
			if err := os.WriteFile(e.p(fmt.Sprintf("d/g%d", i)), []byte("upper"), 0o644); err != nil {
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	var want []byte
	for i := range n {
		want = append(want, bytes.Repeat([]byte{byte('0' + i)}, chunk)...)
	}
	check := func(root string) {
		t.Helper()
		wantContent(t, root+"/d/f", string(want))
		for i := range n {
			wantContent(t, fmt.Sprintf("%s/d/g%d", root, i), "upper")
		}
	}
	check(e.m.Root())
	e.unmount()
	check(e.U().root)
	upNames := []string{"f"}
	for i := range n {
		upNames = append(upNames, fmt.Sprintf("g%d", i))
	}
	wantNames(t, e.U().p("d"), upNames...) // no temp files left behind
	e.remount()
	check(e.m.Root())
}

// OpenFdAcrossCopyUp: an fd and a read-only shared mapping opened on a
// lower file before it is copied up and written. POSIX wants both to see
// the new data; what the backend does is recorded (quirks
// StaleReadAfterCopyUp, StaleMmapAfterCopyUp).
func OpenFdAcrossCopyUp(t *testing.T, b Backend) {
	e := newEnv(t, b, 1, false)
	e.L(0).file("f", "lower data")
	e.mount()

	r, err := os.Open(e.p("f"))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = r.Close() }() // read-only
	mem, err := unix.Mmap(int(r.Fd()), 0, 4096, unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		t.Fatalf("mmap of a lower file: %v", err)
	}
	defer func() { _ = unix.Munmap(mem) }() // a read-only mapping
	if string(mem[:10]) != "lower data" {
		t.Errorf("mapping reads %q before copy-up", mem[:10])
	}

	w, err := os.OpenFile(e.p("f"), os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.WriteAt([]byte("UPPER"), 0); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 10)
	if _, err := r.ReadAt(buf, 0); err != nil {
		t.Fatal(err)
	}
	classify := func(what string, got []byte, q Quirk) {
		t.Helper()
		switch string(got) {
		case "UPPER data":
			observe(t, b, q, false, what+" sees the copy-up's new data")
		case "lower data":
			observe(t, b, q, true, what+" still sees the lower data")
		default:
			t.Errorf("%s reads %q, want %q or %q", what, got, "UPPER data", "lower data")
		}
	}
	classify("pre-copy-up fd", buf, StaleReadAfterCopyUp)
	classify("pre-copy-up read-only mapping", mem[:10], StaleMmapAfterCopyUp)
	wantContent(t, e.p("f"), "UPPER data")
}
