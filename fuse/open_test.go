//go:build linux

package fuse

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/stratafs/strata/internal/testutil"
)

// TestOpenModesAsKernel: read-only opens of lower files are lazy (the
// descriptor is opened on the first READ) and cached by the kernel;
// opens of upper files use passthrough unless the inode has a cached open
// (the kernel refuses to mix the two io modes on one inode). Sequences of
// opens that mix the modes on one inode, across copy-ups, all succeed
// and read what kernel overlayfs reads.
func TestOpenModesAsKernel(t *testing.T) {
	testutil.RequireFUSE(t)
	testutil.RequireOverlay(t)
	got := map[string]string{}
	for _, be := range []string{"fuse", "kernel"} {
		l := newCrossLayers(t)
		root := mountOn(t, be, l)
		got[be] = openModes(t, root)
	}
	want := "lazy-unread=A1 read-then-write=B2 metacopy-ro=M3 upper-ro=K+4 mixed=X56 mixed-after=X567 fstat-lazy=1 unread-close=ok"
	if got["fuse"] != want {
		t.Errorf("fuse:\n got %s\nwant %s", got["fuse"], want)
	}
	if got["fuse"] != got["kernel"] {
		t.Errorf("fuse and kernel differ:\n fuse   %s\n kernel %s", got["fuse"], got["kernel"])
	}
}

// openModes runs the open sequences at root and describes what they read.
func openModes(t *testing.T, root string) string {
	t.Helper()
	p := func(n string) string { return filepath.Join(root, n) }
	open := func(n string, flags int) *os.File {
		t.Helper()
		f, err := os.OpenFile(p(n), flags, 0)
		if err != nil {
			t.Fatalf("open %s: %v", n, err)
		}
		t.Cleanup(func() { f.Close() })
		return f
	}
	write := func(f *os.File, s string) {
		t.Helper()
		if _, err := f.WriteString(s); err != nil {
			t.Fatalf("write %s: %v", f.Name(), err)
		}
	}
	readAt0 := func(f *os.File) string {
		t.Helper()
		b, err := io.ReadAll(io.NewSectionReader(f, 0, 1<<20))
		if err != nil {
			t.Fatalf("read %s: %v", f.Name(), err)
		}
		return string(b)
	}
	var out []string
	note := func(k, v string) { out = append(out, k+"="+v) }

	// a lazy read-only open, unread while another fd copies the file up
	// and writes: its first read opens the upper file
	ro := open("a", os.O_RDONLY)
	w := open("a", os.O_WRONLY|os.O_APPEND)
	write(w, "1")
	note("lazy-unread", readAt0(ro))

	// read before the copy-up (the descriptor is on the lower file), then
	// the fd follows the copy-up
	ro = open("b", os.O_RDONLY)
	if s := readAt0(ro); s != "B" {
		t.Fatalf("b: read %q", s)
	}
	w = open("b", os.O_WRONLY|os.O_APPEND)
	write(w, "2")
	note("read-then-write", readAt0(ro))

	// a metadata-only copy: a read-only open reads the lower data; a
	// write copies the data up and the read-only fd follows
	if err := os.Chmod(p("m"), 0o640); err != nil {
		t.Fatal(err)
	}
	ro = open("m", os.O_RDONLY)
	w = open("m", os.O_WRONLY|os.O_APPEND)
	write(w, "3")
	note("metacopy-ro", readAt0(ro))

	// an upper file: read-only and write opens at once
	w = open("keep/k", os.O_WRONLY|os.O_APPEND)
	write(w, "+")
	w.Close()
	ro = open("keep/k", os.O_RDONLY)
	w = open("keep/k", os.O_WRONLY|os.O_APPEND)
	write(w, "4")
	note("upper-ro", readAt0(ro))

	// io modes mixed on one inode: a cached (lower, read-only) open, a
	// write open that copies up while it is open, a read-only open of
	// the upper file, then, all closed, fresh opens of the upper file
	ro = open("d/x", os.O_RDONLY)
	rw := open("d/x", os.O_RDWR|os.O_APPEND)
	write(rw, "5")
	ro.Close()
	ro2 := open("d/x", os.O_RDONLY)
	write(rw, "6")
	note("mixed", readAt0(ro2))
	rw.Close()
	ro2.Close()
	rw = open("d/x", os.O_RDWR|os.O_APPEND)
	ro = open("d/x", os.O_RDONLY)
	write(rw, "7")
	note("mixed-after", readAt0(ro))

	// fstat of a lazy fd, and close of one never read
	ro = open("d/y", os.O_RDONLY)
	var st unix.Stat_t
	if err := unix.Fstat(int(ro.Fd()), &st); err != nil {
		t.Fatal(err)
	}
	note("fstat-lazy", fmt.Sprint(st.Size))
	note("unread-close", map[bool]string{true: "ok", false: "failed"}[open("d/sub/z", os.O_RDONLY).Close() == nil])
	return strings.Join(out, " ")
}

// TestLazyOpenConcurrentReads: concurrent first reads of one lazy handle
// (the kernel sends READs of distinct ranges in parallel) open its
// descriptor once and all read the right bytes.
func TestLazyOpenConcurrentReads(t *testing.T) {
	testutil.RequireFUSE(t)
	l := newCrossLayers(t)
	data := make([]byte, 4<<20)
	for i := range data {
		data[i] = byte(i * 7 / 4096)
	}
	if err := os.WriteFile(filepath.Join(l.lower, "big"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	root, _ := mountFUSE(t, l)
	f, err := os.Open(filepath.Join(root, "big"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	const parts = 8
	errs := make(chan error, parts)
	for i := 0; i < parts; i++ {
		go func(i int) {
			sz := len(data) / parts
			buf := make([]byte, sz)
			if _, err := f.ReadAt(buf, int64(i*sz)); err != nil {
				errs <- err
				return
			}
			if string(buf) != string(data[i*sz:(i+1)*sz]) {
				errs <- fmt.Errorf("part %d: wrong bytes", i)
				return
			}
			errs <- nil
		}(i)
	}
	for i := 0; i < parts; i++ {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
}
