package reliability

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/stratafs/strata/internal/fstree"
	"github.com/stratafs/strata/internal/testutil"
)

const (
	loadWorkers = 16
	loadShared  = 8
)

// loadCounters are shared by all workers.
type loadCounters struct {
	ops, errs, mismatches atomic.Int64
	mu                    sync.Mutex
	first                 []string // first few problems, for the log
}

func (c *loadCounters) problem(mismatch bool, format string, args ...any) {
	if mismatch {
		c.mismatches.Add(1)
	} else {
		c.errs.Add(1)
	}
	c.mu.Lock()
	if len(c.first) < 20 {
		c.first = append(c.first, fmt.Sprintf(format, args...))
	}
	c.mu.Unlock()
}

// sharedBody is the content of shared file i as the top lower layer
// holding it has it.
func sharedBody(i, layer int) []byte {
	return bytes.Repeat([]byte(fmt.Sprintf("shared %d layer %d\n", i, layer)), 100*(i+1))
}

// TestLoadFUSE runs 16 workers against one strata FUSE mount (3 lowers +
// upper, server in a child process) for a bounded time (STRATA_LOAD_SECONDS,
// default 5 s, 60 s with STRATA_STRESS=1). Each worker creates, writes,
// appends, reads back, renames, unlinks, stats and lists files in its own
// subtree (w<i>, which starts with files from the lowers, so copy-ups run
// concurrently) and reads shared lower files. At the end every file must
// hold what its worker last wrote (through FUSE, and again through kernel
// overlayfs over the same layers), the lowers are unchanged and the upper
// has no whiteout for a name that exists.
func TestLoadFUSE(t *testing.T) {
	testutil.RequireFUSE(t)
	testutil.RequireOverlay(t)
	secs := envInt(t, "STRATA_LOAD_SECONDS", 5)
	if stress() && os.Getenv("STRATA_LOAD_SECONDS") == "" {
		secs = 60
	}
	sp := layerDirs(t, "", 3)
	// Lowers: sp.Lowers[2] is the bottom. Shared files are in the bottom;
	// even ones are replaced by the middle layer. Worker dirs get two
	// files in the bottom and one in the middle.
	for i := 0; i < loadShared; i++ {
		writeFile(t, filepath.Join(sp.Lowers[2], "shared", fmt.Sprintf("s%d", i)), sharedBody(i, 2))
		if i%2 == 0 {
			writeFile(t, filepath.Join(sp.Lowers[1], "shared", fmt.Sprintf("s%d", i)), sharedBody(i, 1))
		}
	}
	want := make([]map[string][]byte, loadWorkers)
	for w := 0; w < loadWorkers; w++ {
		want[w] = map[string][]byte{}
		for j := 0; j < 2; j++ {
			name := fmt.Sprintf("low%d", j)
			body := []byte(fmt.Sprintf("worker %d lower file %d\n", w, j))
			writeFile(t, filepath.Join(sp.Lowers[2], fmt.Sprintf("w%d", w), name), body)
			want[w][name] = body
		}
		body := []byte(fmt.Sprintf("worker %d middle file\n", w))
		writeFile(t, filepath.Join(sp.Lowers[1], fmt.Sprintf("w%d", w), "sub", "mid"), body)
		want[w]["sub/mid"] = body
		if err := os.MkdirAll(filepath.Join(sp.Lowers[0], fmt.Sprintf("w%d", w), "sub"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	var lowerBefore []fstree.Tree
	for _, l := range sp.Lowers {
		tr, err := fstree.Snapshot(l)
		if err != nil {
			t.Fatal(err)
		}
		lowerBefore = append(lowerBefore, tr)
	}

	unmount := mountFUSEChild(t, sp)
	var c loadCounters
	deadline := time.Now().Add(time.Duration(secs) * time.Second)
	var wg sync.WaitGroup
	for w := 0; w < loadWorkers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			loadWorker(sp.Target, w, want[w], deadline, &c)
		}()
	}
	wg.Wait()
	t.Logf("load: %d workers, %d s: %d ops, %d errors, %d data mismatches", loadWorkers, secs, c.ops.Load(), c.errs.Load(), c.mismatches.Load())
	for _, p := range c.first {
		t.Error(p)
	}

	checkWant := func(root, via string) {
		for w := 0; w < loadWorkers; w++ {
			dir := filepath.Join(root, fmt.Sprintf("w%d", w))
			got := map[string]bool{}
			filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
				if err != nil {
					t.Errorf("%s: walk %s: %v", via, p, err)
					return nil
				}
				if !d.IsDir() {
					rel, _ := filepath.Rel(dir, p)
					got[rel] = true
				}
				return nil
			})
			for name, body := range want[w] {
				b, err := os.ReadFile(filepath.Join(dir, name))
				if err != nil {
					t.Errorf("%s: w%d/%s: %v", via, w, name, err)
				} else if !bytes.Equal(b, body) {
					t.Errorf("%s: w%d/%s: content differs (%d bytes, want %d)", via, w, name, len(b), len(body))
				}
				delete(got, name)
			}
			for name := range got {
				t.Errorf("%s: w%d/%s: exists but its worker removed it", via, w, name)
			}
		}
		for i := 0; i < loadShared; i++ {
			layer := 2 - (i+1)%2
			if b, err := os.ReadFile(filepath.Join(root, "shared", fmt.Sprintf("s%d", i))); err != nil || !bytes.Equal(b, sharedBody(i, layer)) {
				t.Errorf("%s: shared/s%d: %v or content differs", via, i, err)
			}
		}
	}
	checkWant(sp.Target, "fuse")
	unmount()

	for i, l := range sp.Lowers {
		tr, err := fstree.Snapshot(l)
		if err != nil {
			t.Fatal(err)
		}
		if d := fstree.Diff(lowerBefore[i], tr); len(d) > 0 {
			t.Errorf("lower %d changed: %v", i, d)
		}
	}
	// No whiteout in the upper for a name that exists.
	for w := 0; w < loadWorkers; w++ {
		for name := range want[w] {
			var st unix.Stat_t
			p := filepath.Join(sp.Upper, fmt.Sprintf("w%d", w), name)
			if err := unix.Lstat(p, &st); err == nil && st.Mode&unix.S_IFMT == unix.S_IFCHR && st.Rdev == 0 {
				t.Errorf("upper %s: whiteout for an existing name", p)
			}
		}
	}
	// The same layers through kernel overlayfs.
	mountKernel(t, sp)
	checkWant(sp.Target, "kernel")
}

func writeFile(t *testing.T, p string, b []byte) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// loadWorker runs random operations on root/w<w> until deadline, keeping
// want (relative name -> content) in step.
func loadWorker(root string, w int, want map[string][]byte, deadline time.Time, c *loadCounters) {
	rng := rand.New(rand.NewPCG(uint64(w), 42))
	dir := filepath.Join(root, fmt.Sprintf("w%d", w))
	names := func() []string {
		ns := make([]string, 0, len(want))
		for n := range want {
			ns = append(ns, n)
		}
		sort.Strings(ns)
		return ns
	}
	pick := func() (string, bool) {
		ns := names()
		if len(ns) == 0 {
			return "", false
		}
		return ns[rng.IntN(len(ns))], true
	}
	newName := func() string {
		n := fmt.Sprintf("f%d", rng.IntN(40))
		if rng.IntN(3) == 0 {
			n = "sub/" + n
		}
		return n
	}
	data := func() []byte {
		b := make([]byte, 1+rng.IntN(20000))
		for i := range b {
			b[i] = byte('a' + rng.IntN(26))
		}
		return b
	}
	for n := 0; time.Now().Before(deadline); n++ {
		c.ops.Add(1)
		switch op := rng.IntN(10); op {
		case 0: // create (or replace)
			name, body := newName(), data()
			if err := os.WriteFile(filepath.Join(dir, name), body, 0o644); err != nil {
				c.problem(false, "w%d create %s: %v", w, name, err)
				continue
			}
			want[name] = body
		case 1: // write at offset
			name, ok := pick()
			if !ok {
				continue
			}
			body := data()
			off := rng.IntN(len(want[name]) + 100)
			f, err := os.OpenFile(filepath.Join(dir, name), os.O_WRONLY, 0)
			if err != nil {
				c.problem(false, "w%d open %s: %v", w, name, err)
				continue
			}
			_, err = f.WriteAt(body, int64(off))
			if cerr := f.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				c.problem(false, "w%d pwrite %s: %v", w, name, err)
				continue
			}
			old := want[name]
			nw := make([]byte, max(len(old), off+len(body)))
			copy(nw, old)
			copy(nw[off:], body)
			want[name] = nw
		case 2: // append
			name, ok := pick()
			if !ok {
				continue
			}
			body := data()
			f, err := os.OpenFile(filepath.Join(dir, name), os.O_WRONLY|os.O_APPEND, 0)
			if err != nil {
				c.problem(false, "w%d open %s: %v", w, name, err)
				continue
			}
			_, err = f.Write(body)
			if cerr := f.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				c.problem(false, "w%d append %s: %v", w, name, err)
				continue
			}
			want[name] = append(append([]byte(nil), want[name]...), body...)
		case 3, 4: // read and verify
			name, ok := pick()
			if !ok {
				continue
			}
			b, err := os.ReadFile(filepath.Join(dir, name))
			if err != nil {
				c.problem(false, "w%d read %s: %v", w, name, err)
			} else if !bytes.Equal(b, want[name]) {
				c.problem(true, "w%d read %s: %d bytes, want %d, differ", w, name, len(b), len(want[name]))
			}
		case 5: // rename
			name, ok := pick()
			if !ok {
				continue
			}
			to := newName()
			if err := os.Rename(filepath.Join(dir, name), filepath.Join(dir, to)); err != nil {
				c.problem(false, "w%d rename %s %s: %v", w, name, to, err)
				continue
			}
			if to != name {
				want[to] = want[name]
				delete(want, name)
			}
		case 6: // unlink
			name, ok := pick()
			if !ok {
				continue
			}
			if err := os.Remove(filepath.Join(dir, name)); err != nil {
				c.problem(false, "w%d unlink %s: %v", w, name, err)
				continue
			}
			delete(want, name)
		case 7: // stat
			name := newName()
			fi, err := os.Lstat(filepath.Join(dir, name))
			body, ok := want[name]
			switch {
			case ok && err != nil:
				c.problem(false, "w%d stat %s: %v", w, name, err)
			case ok && fi.Size() != int64(len(body)):
				c.problem(true, "w%d stat %s: size %d, want %d", w, name, fi.Size(), len(body))
			case !ok && !errors.Is(err, fs.ErrNotExist):
				c.problem(true, "w%d stat %s: %v, want ENOENT", w, name, err)
			}
		case 8: // readdir
			for _, sub := range []string{"", "sub"} {
				ents, err := os.ReadDir(filepath.Join(dir, sub))
				if err != nil {
					c.problem(false, "w%d readdir %s: %v", w, sub, err)
					continue
				}
				var got, exp []string
				for _, e := range ents {
					if !e.IsDir() {
						got = append(got, filepath.Join(sub, e.Name()))
					}
				}
				for _, n := range names() {
					if filepath.Dir(n) == filepath.Clean("./"+sub) || (sub == "" && filepath.Dir(n) == ".") {
						exp = append(exp, n)
					}
				}
				sort.Strings(got)
				if fmt.Sprint(got) != fmt.Sprint(exp) {
					c.problem(true, "w%d readdir %q: %v, want %v", w, sub, got, exp)
				}
			}
		case 9: // shared lower file
			i := rng.IntN(loadShared)
			layer := 2 - (i+1)%2
			b, err := os.ReadFile(filepath.Join(root, "shared", fmt.Sprintf("s%d", i)))
			if err != nil {
				c.problem(false, "w%d read shared/s%d: %v", w, i, err)
			} else if !bytes.Equal(b, sharedBody(i, layer)) {
				c.problem(true, "w%d read shared/s%d: content differs", w, i)
			}
		}
	}
}

// TestConcurrentCopyUpFUSE: 8 goroutines append a line each to the same
// lower files at once (with a chmod and a setxattr mixed in), so copy-ups
// of one file race. Every file ends with its lower content followed by
// each line exactly once, and the lowers are unchanged.
func TestConcurrentCopyUpFUSE(t *testing.T) {
	testutil.RequireFUSE(t)
	const files, writers = 40, 8
	sp := layerDirs(t, "", 2)
	for i := 0; i < files; i++ {
		writeFile(t, filepath.Join(sp.Lowers[1], "d", fmt.Sprintf("f%d", i)), []byte(fmt.Sprintf("lower %d\n", i)))
	}
	before, err := fstree.Snapshot(sp.Lowers[1])
	if err != nil {
		t.Fatal(err)
	}
	mountFUSEChild(t, sp)
	var wg sync.WaitGroup
	var errs atomic.Int64
	for g := 0; g < writers; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < files; i++ {
				p := filepath.Join(sp.Target, "d", fmt.Sprintf("f%d", (i+g*5)%files))
				switch g % 4 {
				case 1:
					if err := os.Chmod(p, 0o640); err != nil {
						t.Errorf("chmod %s: %v", p, err)
					}
				case 2:
					if err := unix.Setxattr(p, fmt.Sprintf("user.g%d", g), []byte("v"), 0); err != nil {
						t.Errorf("setxattr %s: %v", p, err)
					}
				}
				f, err := os.OpenFile(p, os.O_WRONLY|os.O_APPEND, 0)
				if err != nil {
					errs.Add(1)
					t.Errorf("open %s: %v", p, err)
					continue
				}
				if _, err := fmt.Fprintf(f, "g%d\n", g); err != nil {
					errs.Add(1)
					t.Errorf("append %s: %v", p, err)
				}
				f.Close()
			}
		}()
	}
	wg.Wait()
	for i := 0; i < files; i++ {
		p := filepath.Join(sp.Target, "d", fmt.Sprintf("f%d", i))
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		lines := bytes.Split(bytes.TrimSuffix(b, []byte("\n")), []byte("\n"))
		if len(lines) != writers+1 || string(lines[0]) != fmt.Sprintf("lower %d", i) {
			t.Errorf("%s: %q, want the lower line and %d appended lines", p, b, writers)
			continue
		}
		seen := map[string]bool{}
		for _, l := range lines[1:] {
			seen[string(l)] = true
		}
		if len(seen) != writers {
			t.Errorf("%s: appended lines %q are not one per writer", p, lines[1:])
		}
		for g := 2; g < writers; g += 4 {
			if _, err := unix.Getxattr(p, fmt.Sprintf("user.g%d", g), make([]byte, 8)); err != nil {
				t.Errorf("%s: xattr user.g%d: %v", p, g, err)
			}
		}
	}
	after, err := fstree.Snapshot(sp.Lowers[1])
	if err != nil {
		t.Fatal(err)
	}
	if d := fstree.Diff(before, after); len(d) > 0 {
		t.Errorf("lower changed: %v", d)
	}
	t.Logf("concurrent copy-up: %d files x %d writers, %d errors", files, writers, errs.Load())
}
