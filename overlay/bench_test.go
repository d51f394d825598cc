package overlay

import (
	"crypto/rand"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

// benchStack builds n lower layers (plus an empty upper and work dir when
// upper) under dir; fill(i, layerDir) populates lower i (0 = topmost).
func benchStack(b *testing.B, dir string, n int, upper bool, fill func(i int, l string), opts ...StackOption) *Stack {
	b.Helper()
	var lowers []string
	for i := range n {
		l := filepath.Join(dir, fmt.Sprintf("l%03d", i))
		if err := os.MkdirAll(l, 0o755); err != nil {
			b.Fatal(err)
		}
		fill(i, l)
		lowers = append(lowers, l)
	}
	if upper {
		u, w := filepath.Join(dir, "upper"), filepath.Join(dir, "work")
		for _, d := range []string{u, w} {
			if err := os.MkdirAll(d, 0o755); err != nil {
				b.Fatal(err)
			}
		}
		opts = append(opts, WithUpper(u, w))
	}
	s, err := NewStack(lowers, opts...)
	if err != nil {
		b.Fatal(err)
	}
	return s
}

func writeBenchFile(b *testing.B, p string, data []byte) {
	b.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		b.Fatal(err)
	}
	if err := os.WriteFile(p, data, 0o644); err != nil {
		b.Fatal(err)
	}
}

// BenchmarkLookup resolves "d/target" where every layer has a dir "d" (so
// the merged dir spans all layers) and only the bottom layer has the
// target; "miss" resolves a name no layer has.
func BenchmarkLookup(b *testing.B) {
	for _, depth := range []int{1, 8, 32, 128, 500} {
		dir := b.TempDir()
		s := benchStack(b, dir, depth, false, func(i int, l string) {
			writeBenchFile(b, filepath.Join(l, "d", fmt.Sprintf("filler%d", i)), nil)
			if i == depth-1 {
				writeBenchFile(b, filepath.Join(l, "d", "target"), []byte("x"))
			}
		})
		for _, c := range []struct{ name, path string }{{"hit", "d/target"}, {"miss", "d/missing"}} {
			b.Run(fmt.Sprintf("depth=%d/%s", depth, c.name), func(b *testing.B) {
				b.ReportAllocs()
				for b.Loop() {
					_, err := s.Lookup(c.path)
					if (err == nil) != (c.name == "hit") {
						b.Fatal(err)
					}
				}
				b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(depth), "ns/layer")
				b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "lookups/s")
			})
			// The FUSE shape: LOOKUP(parent, name) with the parent's
			// merged Dir already held by its inode.
			b.Run(fmt.Sprintf("depth=%d/%s-in-dir", depth, c.name), func(b *testing.B) {
				d, err := s.LookupDir("d")
				if err != nil {
					b.Fatal(err)
				}
				name := filepath.Base(c.path)
				b.ReportAllocs()
				for b.Loop() {
					_, err := s.LookupIn(d, name)
					if (err == nil) != (c.name == "hit") {
						b.Fatal(err)
					}
				}
				b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(depth), "ns/layer")
			})
		}
	}
}

// BenchmarkReadDir merges a dir of 10,000 names spread over 8 layers:
// each lower holds 1/8 of the names, the top lower repeats 1,000 names of
// the layers below, and the upper whites out 500 of them.
func BenchmarkReadDir(b *testing.B) {
	const names, layers = 10000, 8
	dir := b.TempDir()
	s := benchStack(b, dir, layers, true, func(i int, l string) {
		for j := i; j < names; j += layers {
			writeBenchFile(b, filepath.Join(l, "d", fmt.Sprintf("name%05d", j)), nil)
		}
		if i == 0 {
			for j := 1; j < 2000; j += 2 {
				writeBenchFile(b, filepath.Join(l, "d", fmt.Sprintf("name%05d", j)), nil)
			}
		}
	})
	if err := os.Mkdir(filepath.Join(s.Upper(), "d"), 0o755); err != nil {
		b.Fatal(err)
	}
	for j := 0; j < 1000; j += 2 {
		if err := MakeWhiteout(filepath.Join(s.Upper(), "d"), fmt.Sprintf("name%05d", j)); err != nil {
			b.Fatal(err)
		}
	}
	b.Run("strata", func(b *testing.B) {
		b.ReportAllocs()
		var n int
		for b.Loop() {
			ents, err := s.ReadDir("d")
			if err != nil {
				b.Fatal(err)
			}
			n = len(ents)
		}
		if n != names-500 {
			b.Fatalf("%d entries, want %d", n, names-500)
		}
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(n), "ns/entry")
	})
	// Baseline: getdents of the 8+1 layer dirs, no merge.
	b.Run("getdents-only", func(b *testing.B) {
		buf := make([]byte, 64<<10)
		b.ReportAllocs()
		for b.Loop() {
			for _, l := range s.Layers() {
				if err := readDirents(filepath.Join(l, "d"), buf, func(int, []byte, uint8, uint64) error { return nil }); err != nil {
					b.Fatal(err)
				}
			}
		}
	})
	// Reference: kernel overlayfs readdir (getdents64 of the merged dir,
	// what ls -f costs) when mounting works here.
	b.Run("kernel-overlayfs", func(b *testing.B) {
		target := b.TempDir()
		if err := Mount(s, target, MountOptions{ReadOnly: true}); err != nil {
			b.Skip(err)
		}
		defer Unmount(target)
		buf := make([]byte, 64<<10)
		b.ReportAllocs()
		var n int
		for b.Loop() {
			n = 0
			// A fresh open each time: the kernel caches the merged
			// listing per open dir and per dir version.
			if err := readDirents(filepath.Join(target, "d"), buf, func(int, []byte, uint8, uint64) error { n++; return nil }); err != nil {
				b.Fatal(err)
			}
		}
		if n != names-500 {
			b.Fatalf("kernel lists %d entries, want %d", n, names-500)
		}
	})
}

// BenchmarkCopyUp1GiB copies up a 1 GiB file of real (random) data,
// written once per run, and compares with cp --reflink=auto on the same fs.
func BenchmarkCopyUp1GiB(b *testing.B) {
	const size = 1 << 30
	dir := b.TempDir()
	buf := make([]byte, 4<<20)
	rand.Read(buf)
	newStack := func(b *testing.B, name string, opts ...StackOption) *Stack {
		return benchStack(b, filepath.Join(dir, name), 1, true, func(_ int, l string) {
			f, err := os.Create(filepath.Join(l, "big"))
			if err != nil {
				b.Fatal(err)
			}
			for off := 0; off < size; off += len(buf) {
				if _, err := f.Write(buf); err != nil {
					b.Fatal(err)
				}
			}
			if err := f.Close(); err != nil {
				b.Fatal(err)
			}
		}, opts...)
	}
	s := newStack(b, "s")
	sv, err := NewStack(s.Lowers(), WithUpper(s.Upper(), s.Work()), WithVolatile())
	if err != nil {
		b.Fatal(err)
	}
	unix.Sync()
	run := func(name string, copyOnce func(b *testing.B, dst string)) {
		b.Run(name, func(b *testing.B) {
			b.SetBytes(size)
			b.ReportAllocs()
			dst := filepath.Join(s.Upper(), "big")
			for b.Loop() {
				copyOnce(b, dst)
				b.StopTimer()
				if err := os.Remove(dst); err != nil {
					b.Fatal(err)
				}
				unix.Sync()
				b.StartTimer()
			}
		})
	}
	run("strata-fsync", func(b *testing.B, _ string) {
		if _, err := s.CopyUp("big"); err != nil {
			b.Fatal(err)
		}
	})
	run("strata-volatile", func(b *testing.B, _ string) {
		if _, err := sv.CopyUp("big"); err != nil {
			b.Fatal(err)
		}
	})
	src := filepath.Join(s.Lowers()[0], "big")
	run("cp-reflink-auto", func(b *testing.B, dst string) {
		if out, err := exec.Command("cp", "--reflink=auto", "--preserve=all", src, dst).CombinedOutput(); err != nil {
			b.Fatalf("cp: %v: %s", err, out)
		}
	})
	run("cp-reflink-auto+sync", func(b *testing.B, dst string) {
		if out, err := exec.Command("cp", "--reflink=auto", "--preserve=all", src, dst).CombinedOutput(); err != nil {
			b.Fatalf("cp: %v: %s", err, out)
		}
		if out, err := exec.Command("sync", dst).CombinedOutput(); err != nil {
			b.Fatalf("sync: %v: %s", err, out)
		}
	})
}

// BenchmarkCopyUpSmallFiles copies up 10,000 files of 1 KiB from one lower
// dir per op (the parent dir is copied up once per op too).
func BenchmarkCopyUpSmallFiles(b *testing.B) {
	const files = 10000
	data := make([]byte, 1024)
	rand.Read(data)
	for _, volatile := range []bool{false, true} {
		name := "fsync"
		var opts []StackOption
		if volatile {
			name = "volatile"
			opts = append(opts, WithVolatile())
		}
		b.Run(name, func(b *testing.B) {
			s := benchStack(b, b.TempDir(), 1, true, func(_ int, l string) {
				for i := range files {
					writeBenchFile(b, filepath.Join(l, "d", fmt.Sprintf("f%05d", i)), data)
				}
			}, opts...)
			eachFileLoop(b, s, files, func(p string) error {
				_, err := s.CopyUp(p)
				return err
			})
			b.ReportMetric(float64(files)*float64(b.N)/b.Elapsed().Seconds(), "files/s")
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/files, "ns/file")
		})
		// Reference: the kernel's copy-up of the same files, triggered by
		// an O_WRONLY open through a kernel overlayfs mount.
		b.Run("kernel-"+name, func(b *testing.B) {
			s := benchStack(b, b.TempDir(), 1, true, func(_ int, l string) {
				for i := range files {
					writeBenchFile(b, filepath.Join(l, "d", fmt.Sprintf("f%05d", i)), data)
				}
			})
			unix.Sync()
			b.ReportAllocs()
			for b.Loop() {
				b.StopTimer()
				target := b.TempDir()
				if err := Mount(s, target, MountOptions{Volatile: volatile}); err != nil {
					b.Skip(err)
				}
				b.StartTimer()
				for i := range files {
					fd, err := unix.Open(filepath.Join(target, "d", fmt.Sprintf("f%05d", i)), unix.O_WRONLY, 0)
					if err != nil {
						b.Fatal(err)
					}
					unix.Close(fd)
				}
				b.StopTimer()
				if err := Unmount(target); err != nil {
					b.Fatal(err)
				}
				if err := os.RemoveAll(filepath.Join(s.Upper(), "d")); err != nil {
					b.Fatal(err)
				}
				// A volatile mount leaves work/incompat/volatile, which
				// refuses the next mount: start the work dir afresh.
				if err := os.RemoveAll(s.Work()); err != nil {
					b.Fatal(err)
				}
				if err := os.Mkdir(s.Work(), 0o755); err != nil {
					b.Fatal(err)
				}
				unix.Sync()
				b.StartTimer()
			}
			b.ReportMetric(float64(files)*float64(b.N)/b.Elapsed().Seconds(), "files/s")
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/files, "ns/file")
		})
	}
}

// BenchmarkRemove whites out 10,000 lower files (one char-device whiteout
// each in the upper, its parent copied up once), as rm -rf of a lower
// tree does, and reports whiteouts/s.
func BenchmarkRemove(b *testing.B) {
	const files = 10000
	s := benchStack(b, b.TempDir(), 1, true, func(_ int, l string) {
		for i := range files {
			writeBenchFile(b, filepath.Join(l, "d", fmt.Sprintf("f%05d", i)), []byte("x"))
		}
	})
	eachFileLoop(b, s, files, s.Remove)
	b.ReportMetric(float64(files)*float64(b.N)/b.Elapsed().Seconds(), "whiteouts/s")
}

// eachFileLoop runs op on the lower files d/f00000 … of s, all of them
// per iteration, then (untimed) removes the upper's d/ and syncs, so that
// every iteration starts from the lower files alone.
func eachFileLoop(b *testing.B, s *Stack, files int, op func(p string) error) {
	paths := make([]string, files)
	for i := range paths {
		paths[i] = fmt.Sprintf("d/f%05d", i)
	}
	unix.Sync()
	b.ReportAllocs()
	for b.Loop() {
		for _, p := range paths {
			if err := op(p); err != nil {
				b.Fatal(err)
			}
		}
		b.StopTimer()
		if err := os.RemoveAll(filepath.Join(s.Upper(), "d")); err != nil {
			b.Fatal(err)
		}
		unix.Sync()
		b.StartTimer()
	}
}
