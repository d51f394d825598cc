//go:build linux

package fuse

import (
	"archive/tar"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/stratafs/strata/internal/testutil"
	"github.com/stratafs/strata/overlay"
)

// benchFiles is the number of files in the benchmark trees.
const benchFiles = 5000

// writeTar writes a tar of n small files in 100 dirs to p.
func writeTar(b *testing.B, p string, n int) {
	b.Helper()
	f, err := os.Create(p)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	tw := tar.NewWriter(f)
	data := []byte("strata benchmark file\n")
	for d := 0; d < 100; d++ {
		if err := tw.WriteHeader(&tar.Header{Name: fmt.Sprintf("d%03d/", d), Typeflag: tar.TypeDir, Mode: 0o755}); err != nil {
			b.Fatal(err)
		}
	}
	for i := 0; i < n; i++ {
		h := &tar.Header{Name: fmt.Sprintf("d%03d/f%05d", i%100, i), Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(data)), Uid: 1000, Gid: 1000}
		if err := tw.WriteHeader(h); err != nil {
			b.Fatal(err)
		}
		if _, err := tw.Write(data); err != nil {
			b.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		b.Fatal(err)
	}
}

type benchMount func(b *testing.B, s *overlay.Stack, target string) (unmount func())

var benchBackends = map[string]benchMount{
	"kernel": func(b *testing.B, s *overlay.Stack, target string) func() {
		if err := overlay.Mount(s, target, overlay.MountOptions{}); err != nil {
			b.Fatal(err)
		}
		return func() { overlay.Unmount(target) }
	},
	"fuse": func(b *testing.B, s *overlay.Stack, target string) func() {
		srv, err := Mount(s, target, Options{})
		if err != nil {
			b.Fatal(err)
		}
		return func() { srv.Unmount(); srv.Wait() }
	},
}

// freshExt4 mounts a new 4 GiB sparse ext4 image and returns its mount
// point: ext4 on a long-used fs spends most of a create scanning inode
// tables for recently deleted inodes it must not reuse, which would swamp
// what the benchmarks measure (as would other work on a shared machine).
func freshExt4(b *testing.B) string {
	b.Helper()
	dir := b.TempDir()
	img, mnt := filepath.Join(dir, "img"), filepath.Join(dir, "mnt")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		b.Fatal(err)
	}
	f, err := os.Create(img)
	if err != nil {
		b.Fatal(err)
	}
	err = f.Truncate(4 << 30)
	f.Close()
	if err != nil {
		b.Fatal(err)
	}
	if out, err := exec.Command("mkfs.ext4", "-q", "-F", img).CombinedOutput(); err != nil {
		b.Skipf("mkfs.ext4: %v %s", err, out)
	}
	if out, err := exec.Command("mount", "-o", "loop", img, mnt).CombinedOutput(); err != nil {
		b.Skipf("mount loop: %v %s", err, out)
	}
	b.Cleanup(func() {
		if err := unix.Unmount(mnt, 0); err != nil {
			unix.Unmount(mnt, unix.MNT_DETACH)
		}
	})
	return mnt
}

// untarFiles is the number of files BenchmarkUntar extracts: benchFiles,
// or STRATA_BENCH_UNTAR_FILES (e.g. 50000).
func untarFiles(b *testing.B) int {
	if v := os.Getenv("STRATA_BENCH_UNTAR_FILES"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n <= 0 {
			b.Fatalf("STRATA_BENCH_UNTAR_FILES=%q: want a positive number", v)
		}
		return n
	}
	return benchFiles
}

// BenchmarkUntar extracts small files (untarFiles) with GNU tar into an
// empty union (the create path) on a fresh ext4 per backend and round,
// kernel and fuse alternating; reports medians (use -benchtime=3x or
// more). Run with -cpu 1,2 to vary the server's GOMAXPROCS.
func BenchmarkUntar(b *testing.B) {
	testutil.RequireFUSE(b)
	testutil.RequireOverlay(b)
	n := untarFiles(b)
	tarball := filepath.Join(b.TempDir(), "t.tar")
	writeTar(b, tarball, n)
	names := []string{"kernel", "fuse"}
	times := map[string][]time.Duration{}
	for i := 0; i < b.N; i++ {
		for _, name := range names {
			fsys := freshExt4(b)
			var dirs []string
			for _, d := range []string{"lower", "upper", "work", "target"} {
				p := filepath.Join(fsys, d)
				if err := os.Mkdir(p, 0o755); err != nil {
					b.Fatal(err)
				}
				dirs = append(dirs, p)
			}
			s, err := overlay.NewStack(dirs[:1], overlay.WithUpper(dirs[1], dirs[2]))
			if err != nil {
				b.Fatal(err)
			}
			unmount := benchBackends[name](b, s, dirs[3])
			start := time.Now()
			out, err := exec.Command("tar", "-xf", tarball, "-C", dirs[3]).CombinedOutput()
			times[name] = append(times[name], time.Since(start))
			unmount()
			if err != nil {
				b.Fatalf("tar: %v %s", err, out)
			}
		}
	}
	for _, name := range names {
		b.ReportMetric(median(times[name]).Seconds(), "s-"+name)
	}
	b.ReportMetric(float64(median(times["fuse"]))/float64(median(times["kernel"])), "x-kernel")
}

// BenchmarkWalkLower walks a lower tree of benchFiles files with lstat
// of every entry (the lookup and readdir paths), on a fresh mount each
// time so nothing is cached.
func BenchmarkWalkLower(b *testing.B) {
	testutil.RequireFUSE(b)
	testutil.RequireOverlay(b)
	tarball := filepath.Join(b.TempDir(), "t.tar")
	writeTar(b, tarball, benchFiles)
	lower := b.TempDir()
	if out, err := exec.Command("tar", "-xf", tarball, "-C", lower).CombinedOutput(); err != nil {
		b.Fatalf("tar: %v %s", err, out)
	}
	for _, name := range []string{"kernel", "fuse"} {
		b.Run(name, func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				b.StopTimer()
				upper, work, target := b.TempDir(), b.TempDir(), b.TempDir()
				s, err := overlay.NewStack([]string{lower}, overlay.WithUpper(upper, work))
				if err != nil {
					b.Fatal(err)
				}
				unmount := benchBackends[name](b, s, target)
				b.StartTimer()
				n := 0
				err = filepath.WalkDir(target, func(p string, d fs.DirEntry, err error) error {
					if err != nil {
						return err
					}
					_, err = d.Info()
					n++
					return err
				})
				b.StopTimer()
				unmount()
				if err != nil || n != benchFiles+101 {
					b.Fatalf("walk: %d entries, %v", n, err)
				}
				b.StartTimer()
			}
			b.ReportMetric(float64(benchFiles*b.N)/b.Elapsed().Seconds(), "files/s")
		})
	}
}

// fuseOverlayfs mounts s with the fuse-overlayfs binary (skips without it).
func fuseOverlayfs(b *testing.B, s *overlay.Stack, target string) func() {
	bin, err := exec.LookPath("fuse-overlayfs")
	if err != nil {
		b.Skip("fuse-overlayfs not installed")
	}
	opts := "lowerdir=" + strings.Join(s.Lowers(), ":")
	if s.Upper() != "" {
		opts += ",upperdir=" + s.Upper() + ",workdir=" + s.Work()
	}
	if out, err := exec.Command(bin, "-o", opts, target).CombinedOutput(); err != nil {
		b.Fatalf("fuse-overlayfs: %v %s", err, out)
	}
	return func() {
		if err := unix.Unmount(target, 0); err != nil {
			unix.Unmount(target, unix.MNT_DETACH)
		}
	}
}

// statHelperEnv makes TestStatHelper, run as a child process, lstat
// names: "dir\nnamesfile\nwant" (want "ok" or "err").
const statHelperEnv = "STRATA_STAT_HELPER"

// TestStatHelper is the client side of BenchmarkStatDepth in its own
// process: a client in the server's process shares its Ps, and with few
// of them a server thread waking from a read of /dev/fuse waits for a P
// the blocked client holds, which measures the Go scheduler instead.
func TestStatHelper(t *testing.T) {
	spec := os.Getenv(statHelperEnv)
	if spec == "" {
		t.Skip("helper process for BenchmarkStatDepth")
	}
	a := strings.Split(spec, "\n")
	data, err := os.ReadFile(a[1])
	if err != nil {
		t.Fatal(err)
	}
	names := strings.Fields(string(data))
	start := time.Now()
	var st unix.Stat_t
	for _, n := range names {
		if err := unix.Lstat(a[0]+"/"+n, &st); (err != nil) != (a[2] == "err") {
			t.Fatalf("lstat %s/%s: %v", a[0], n, err)
		}
	}
	fmt.Printf("elapsed=%d\n", time.Since(start).Nanoseconds())
}

// statNames lstats dir/name for every name listed in namesFile in a
// child process and returns the time taken; wantErr: the names are
// expected to be missing.
func statNames(b *testing.B, dir, namesFile string, wantErr bool) time.Duration {
	want := "ok"
	if wantErr {
		want = "err"
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestStatHelper$", "-test.v")
	cmd.Env = append(os.Environ(), statHelperEnv+"="+dir+"\n"+namesFile+"\n"+want)
	out, err := cmd.CombinedOutput()
	if err != nil {
		b.Fatalf("stat helper: %v %s", err, out)
	}
	i := strings.Index(string(out), "elapsed=")
	if i < 0 {
		b.Fatalf("stat helper: no result in %s", out)
	}
	var ns int64
	if _, err := fmt.Sscanf(string(out[i:]), "elapsed=%d", &ns); err != nil {
		b.Fatalf("stat helper: %v in %s", err, out)
	}
	return time.Duration(ns)
}

// cleanupOnce makes f idempotent and also runs it at cleanup (a failed
// benchmark must not leave a mount behind).
func cleanupOnce(b *testing.B, f func()) func() {
	var once sync.Once
	g := func() { once.Do(f) }
	b.Cleanup(g)
	return g
}

func median(d []time.Duration) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	return s[len(s)/2]
}

// BenchmarkStatDepth stats statNames files of the bottom layer of a stack
// depth layers deep, in a dir every layer has (as /usr/lib in images),
// with each backend in turn on every round (the machine may be loaded:
// compare within one run). Per backend and round: "remount" is the first
// stat of each name on a fresh mount, "warm" the second, "missing" a
// first stat of as many absent names. Reports medians over b.N rounds
// (use -benchtime=3x or more) as ns per stat.
func BenchmarkStatDepth(b *testing.B) {
	testutil.RequireFUSE(b)
	testutil.RequireOverlay(b)
	const statNamesN = 1000
	for _, depth := range []int{1, 8, 32, 128} {
		b.Run(fmt.Sprintf("depth=%d", depth), func(b *testing.B) {
			root := b.TempDir()
			var lowers []string
			for i := 0; i < depth; i++ {
				l := filepath.Join(root, fmt.Sprintf("l%03d", i))
				if err := os.MkdirAll(filepath.Join(l, "d"), 0o755); err != nil {
					b.Fatal(err)
				}
				if err := os.WriteFile(filepath.Join(l, "d", fmt.Sprintf("layer%03d", i)), nil, 0o644); err != nil {
					b.Fatal(err)
				}
				lowers = append(lowers, l)
			}
			var names, missing []string
			for i := 0; i < statNamesN; i++ {
				names = append(names, fmt.Sprintf("f%05d", i))
				missing = append(missing, fmt.Sprintf("m%05d", i))
				if err := os.WriteFile(filepath.Join(lowers[depth-1], "d", names[i]), []byte("x"), 0o644); err != nil {
					b.Fatal(err)
				}
			}
			namesFile, missingFile := filepath.Join(root, "names"), filepath.Join(root, "missing")
			if err := os.WriteFile(namesFile, []byte(strings.Join(names, "\n")), 0o644); err != nil {
				b.Fatal(err)
			}
			if err := os.WriteFile(missingFile, []byte(strings.Join(missing, "\n")), 0o644); err != nil {
				b.Fatal(err)
			}
			backends := []struct {
				name  string
				mount benchMount
			}{{"kernel", benchBackends["kernel"]}, {"fuse", benchBackends["fuse"]}, {"fuse-overlayfs", fuseOverlayfs}}
			if _, err := exec.LookPath("fuse-overlayfs"); err != nil {
				backends = backends[:2]
			}
			times := map[string][]time.Duration{}
			for i := 0; i < b.N; i++ {
				for _, be := range backends {
					upper, work, target := b.TempDir(), b.TempDir(), b.TempDir()
					s, err := overlay.NewStack(lowers, overlay.WithUpper(upper, work))
					if err != nil {
						b.Fatal(err)
					}
					unmount := cleanupOnce(b, be.mount(b, s, target))
					dir := target + "/d"
					times[be.name+"/remount"] = append(times[be.name+"/remount"], statNames(b, dir, namesFile, false))
					times[be.name+"/warm"] = append(times[be.name+"/warm"], statNames(b, dir, namesFile, false))
					times[be.name+"/missing"] = append(times[be.name+"/missing"], statNames(b, dir, missingFile, true))
					unmount()
				}
			}
			for _, be := range backends {
				for _, m := range []string{"remount", "warm", "missing"} {
					k := be.name + "/" + m
					b.ReportMetric(float64(median(times[k]).Nanoseconds())/statNamesN, "ns/stat-"+k)
				}
			}
			for _, m := range []string{"remount", "warm", "missing"} {
				b.ReportMetric(float64(median(times["fuse/"+m]))/float64(median(times["kernel/"+m])), "x-kernel-"+m)
			}
		})
	}
}

// BenchmarkChmodBig chmods a 1 GiB sparse lower file holding 16 MiB of
// data (1 MiB every 64 MiB), then appends one byte to it, on a fresh
// union per backend and round, backends alternating. Reports medians
// (use -benchtime=3x or more).
func BenchmarkChmodBig(b *testing.B) {
	testutil.RequireFUSE(b)
	testutil.RequireOverlay(b)
	lower := b.TempDir()
	big := filepath.Join(lower, "big")
	f, err := os.Create(big)
	if err != nil {
		b.Fatal(err)
	}
	chunk := make([]byte, 1<<20)
	for i := range chunk {
		chunk[i] = byte(i)
	}
	for off := int64(0); off < 1<<30; off += 64 << 20 {
		if _, err := f.WriteAt(chunk, off); err != nil {
			b.Fatal(err)
		}
	}
	if err := f.Truncate(1 << 30); err != nil {
		b.Fatal(err)
	}
	f.Close()
	names := []string{"kernel", "fuse"}
	times := map[string][]time.Duration{}
	for i := 0; i < b.N; i++ {
		for _, name := range names {
			upper, work, target := b.TempDir(), b.TempDir(), b.TempDir()
			s, err := overlay.NewStack([]string{lower}, overlay.WithUpper(upper, work))
			if err != nil {
				b.Fatal(err)
			}
			unmount := benchBackends[name](b, s, target)
			p := filepath.Join(target, "big")
			var st unix.Stat_t
			if err := unix.Lstat(p, &st); err != nil { // lookup outside the timing
				b.Fatal(err)
			}
			start := time.Now()
			err = unix.Chmod(p, 0o600)
			times[name+"/chmod"] = append(times[name+"/chmod"], time.Since(start))
			if err != nil {
				b.Fatal(err)
			}
			start = time.Now()
			fd, err := unix.Open(p, unix.O_WRONLY|unix.O_APPEND, 0)
			if err == nil {
				_, err = unix.Write(fd, []byte{'x'})
				unix.Close(fd)
			}
			times[name+"/append"] = append(times[name+"/append"], time.Since(start))
			unmount()
			if err != nil {
				b.Fatal(err)
			}
		}
	}
	for _, k := range []string{"chmod", "append"} {
		for _, name := range names {
			b.ReportMetric(float64(median(times[name+"/"+k]).Microseconds()), "us-"+name+"-"+k)
		}
		b.ReportMetric(float64(median(times["fuse/"+k]))/float64(median(times["kernel/"+k])), "x-kernel-"+k)
	}
}

// BenchmarkLowerTree runs, on a lower tree of 10k files in 100 dirs and
// a fresh ext4 for the upper per backend and round (backends in turn):
// readdir of every dir on a fresh mount ("readdir-cold") and again
// ("readdir-warm"), touch of every file (utimensat: a metadata copy-up),
// then rm -rf of the tree on another fresh mount. Reports medians (use
// -benchtime=3x or more) in ms and the ratios fuse/kernel and
// fuse/fuse-overlayfs.
func BenchmarkLowerTree(b *testing.B) {
	testutil.RequireFUSE(b)
	testutil.RequireOverlay(b)
	const files = 10000
	tarball := filepath.Join(b.TempDir(), "t.tar")
	writeTar(b, tarball, files)
	lower := b.TempDir()
	if out, err := exec.Command("tar", "-xf", tarball, "-C", lower).CombinedOutput(); err != nil {
		b.Fatalf("tar: %v %s", err, out)
	}
	var dirs, paths []string
	for d := 0; d < 100; d++ {
		dirs = append(dirs, fmt.Sprintf("d%03d", d))
	}
	for i := 0; i < files; i++ {
		paths = append(paths, fmt.Sprintf("d%03d/f%05d", i%100, i))
	}
	backends := []struct {
		name  string
		mount benchMount
	}{{"kernel", benchBackends["kernel"]}, {"fuse", benchBackends["fuse"]}, {"fuse-overlayfs", fuseOverlayfs}}
	if _, err := exec.LookPath("fuse-overlayfs"); err != nil {
		backends = backends[:2]
	}
	mount := func(be benchMount) (string, func()) {
		fsys := freshExt4(b)
		upper, work, target := filepath.Join(fsys, "upper"), filepath.Join(fsys, "work"), filepath.Join(fsys, "target")
		for _, d := range []string{upper, work, target} {
			if err := os.Mkdir(d, 0o755); err != nil {
				b.Fatal(err)
			}
		}
		s, err := overlay.NewStack([]string{lower}, overlay.WithUpper(upper, work))
		if err != nil {
			b.Fatal(err)
		}
		return target, be(b, s, target)
	}
	readdirAll := func(root string) time.Duration {
		start := time.Now()
		n := 0
		for _, d := range dirs {
			f, err := os.Open(filepath.Join(root, d))
			if err != nil {
				b.Fatal(err)
			}
			names, err := f.Readdirnames(-1)
			f.Close()
			if err != nil {
				b.Fatal(err)
			}
			n += len(names)
		}
		if n != files {
			b.Fatalf("readdir: %d names, want %d", n, files)
		}
		return time.Since(start)
	}
	times := map[string][]time.Duration{}
	add := func(k string, d time.Duration) { times[k] = append(times[k], d) }
	for i := 0; i < b.N; i++ {
		for _, be := range backends {
			root, unmount := mount(be.mount)
			add(be.name+"/readdir-cold", readdirAll(root))
			add(be.name+"/readdir-warm", readdirAll(root))
			start := time.Now()
			now := []unix.Timespec{{Nsec: unix.UTIME_NOW}, {Nsec: unix.UTIME_NOW}}
			for _, p := range paths {
				if err := unix.UtimesNanoAt(unix.AT_FDCWD, filepath.Join(root, p), now, 0); err != nil {
					b.Fatal(err)
				}
			}
			add(be.name+"/touch", time.Since(start))
			unmount()
			root, unmount = mount(be.mount)
			start = time.Now()
			for _, d := range dirs {
				if err := os.RemoveAll(filepath.Join(root, d)); err != nil {
					b.Fatal(err)
				}
			}
			add(be.name+"/rm-rf", time.Since(start))
			unmount()
		}
	}
	for _, m := range []string{"readdir-cold", "readdir-warm", "touch", "rm-rf"} {
		for _, be := range backends {
			b.ReportMetric(float64(median(times[be.name+"/"+m]).Microseconds())/1000, "ms-"+be.name+"-"+m)
		}
		b.ReportMetric(float64(median(times["fuse/"+m]))/float64(median(times["kernel/"+m])), "x-kernel-"+m)
		if len(backends) == 3 {
			b.ReportMetric(float64(median(times["fuse/"+m]))/float64(median(times["fuse-overlayfs/"+m])), "x-fuse-overlayfs-"+m)
		}
	}
}

// BenchmarkServerLookup measures the server's own work for a lookup of a
// bottom-layer name (present) and of an absent name in a dir every layer
// has, without FUSE, with the lower name index and without it.
func BenchmarkServerLookup(b *testing.B) {
	for _, depth := range []int{1, 8, 32, 128} {
		root := b.TempDir()
		var lowers []string
		for i := 0; i < depth; i++ {
			l := filepath.Join(root, fmt.Sprintf("l%03d", i))
			if err := os.MkdirAll(filepath.Join(l, "d"), 0o755); err != nil {
				b.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(l, "d", fmt.Sprintf("layer%03d", i)), nil, 0o644); err != nil {
				b.Fatal(err)
			}
			lowers = append(lowers, l)
		}
		if err := os.WriteFile(filepath.Join(lowers[depth-1], "d", "bottom"), nil, 0o644); err != nil {
			b.Fatal(err)
		}
		s, err := overlay.NewStack(lowers)
		if err != nil {
			b.Fatal(err)
		}
		u, err := newUnion(s)
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(u.close)
		d := dirState{}
		for i := range lowers {
			d.lowers = append(d.lowers, lref{layer: i, path: "d"})
		}
		indexed := d
		if indexed.index, err = u.dirIndex(d.lowers); err != nil {
			b.Fatal(err)
		}
		for _, c := range []struct {
			name string
			d    dirState
		}{{"index", indexed}, {"noindex", d}} {
			for _, name := range []string{"bottom", "missing"} {
				b.Run(fmt.Sprintf("depth=%d/%s/%s", depth, c.name, name), func(b *testing.B) {
					for i := 0; i < b.N; i++ {
						_, err := u.lookup("d", c.d, name)
						if (err != nil) != (name == "missing") {
							b.Fatal(err)
						}
					}
				})
			}
		}
	}
}
