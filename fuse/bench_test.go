//go:build linux

package fuse

import (
	"archive/tar"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

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

// BenchmarkUntar extracts benchFiles small files with GNU tar into an
// empty union (the create path). Run with -cpu 1,2 to vary the server's
// GOMAXPROCS.
func BenchmarkUntar(b *testing.B) {
	testutil.RequireFUSE(b)
	testutil.RequireOverlay(b)
	tarball := filepath.Join(b.TempDir(), "t.tar")
	writeTar(b, tarball, benchFiles)
	for _, name := range []string{"kernel", "fuse"} {
		b.Run(name, func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				b.StopTimer()
				lower, upper, work, target := b.TempDir(), b.TempDir(), b.TempDir(), b.TempDir()
				s, err := overlay.NewStack([]string{lower}, overlay.WithUpper(upper, work))
				if err != nil {
					b.Fatal(err)
				}
				unmount := benchBackends[name](b, s, target)
				b.StartTimer()
				out, err := exec.Command("tar", "-xf", tarball, "-C", target).CombinedOutput()
				b.StopTimer()
				unmount()
				if err != nil {
					b.Fatalf("tar: %v %s", err, out)
				}
				b.StartTimer()
			}
			b.ReportMetric(float64(benchFiles*b.N)/b.Elapsed().Seconds(), "files/s")
		})
	}
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
