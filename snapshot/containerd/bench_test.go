package containerd

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containerd/containerd/v2/core/mount"
	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	ctrdoverlay "github.com/containerd/containerd/v2/plugins/snapshots/overlay"

	"github.com/stratafs/strata/internal/testutil"
)

// chainDepth is the length of the committed chain the benchmarks work on.
const chainDepth = 100

// BenchmarkSnapshotter times Prepare, Commit, Remove and View+Mounts on
// top of a 100-layer chain, for strata and for containerd's overlayfs
// snapshotter, in the same run so that the ratios compare like with like:
//
//	go test -run '^$' -bench Snapshotter ./snapshot/containerd/
//
// Only the named operation is timed; the setup of each iteration (the
// Prepare before a Commit, the Remove after a Prepare, …) is not.
func BenchmarkSnapshotter(b *testing.B) {
	testutil.RequireRoot(b)
	impls := []struct {
		name string
		open func(root string) (snapshots.Snapshotter, error)
	}{
		{"strata", func(root string) (snapshots.Snapshotter, error) { return Open(root) }},
		{"containerd", func(root string) (snapshots.Snapshotter, error) { return ctrdoverlay.NewSnapshotter(root) }},
	}
	for _, impl := range impls {
		b.Run(impl.name, func(b *testing.B) {
			ctx := namespaces.WithNamespace(context.Background(), "bench")
			sn, err := impl.open(filepath.Join(b.TempDir(), "root"))
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { sn.Close() })
			top := buildChain(ctx, b, sn, chainDepth)
			seq := 0
			next := func() string { seq++; return fmt.Sprintf("k%d", seq) }

			b.Run("Prepare", func(b *testing.B) {
				for b.Loop() {
					k := next()
					if _, err := sn.Prepare(ctx, k, top); err != nil {
						b.Fatal(err)
					}
					b.StopTimer()
					if err := sn.Remove(ctx, k); err != nil {
						b.Fatal(err)
					}
					b.StartTimer()
				}
			})
			b.Run("Commit", func(b *testing.B) {
				for b.Loop() {
					b.StopTimer()
					k := next()
					m, err := sn.Prepare(ctx, k, top)
					if err != nil {
						b.Fatal(err)
					}
					writeUpper(b, m, "f", "data")
					b.StartTimer()
					if err := sn.Commit(ctx, k+"-c", k); err != nil {
						b.Fatal(err)
					}
					b.StopTimer()
					if err := sn.Remove(ctx, k+"-c"); err != nil {
						b.Fatal(err)
					}
					b.StartTimer()
				}
			})
			b.Run("Remove", func(b *testing.B) {
				for b.Loop() {
					b.StopTimer()
					k := next()
					m, err := sn.Prepare(ctx, k, top)
					if err != nil {
						b.Fatal(err)
					}
					writeUpper(b, m, "f", "data")
					b.StartTimer()
					if err := sn.Remove(ctx, k); err != nil {
						b.Fatal(err)
					}
				}
			})
			b.Run("ViewMounts", func(b *testing.B) {
				for b.Loop() {
					k := next()
					if _, err := sn.View(ctx, k, top); err != nil {
						b.Fatal(err)
					}
					if _, err := sn.Mounts(ctx, k); err != nil {
						b.Fatal(err)
					}
					b.StopTimer()
					if err := sn.Remove(ctx, k); err != nil {
						b.Fatal(err)
					}
					b.StartTimer()
				}
			})
		})
	}
}

// buildChain commits depth layers, each with one file, and returns the
// name of the top one.
func buildChain(ctx context.Context, b *testing.B, sn snapshots.Snapshotter, depth int) string {
	b.Helper()
	parent := ""
	for i := range depth {
		key := fmt.Sprintf("layer-%d-active", i)
		m, err := sn.Prepare(ctx, key, parent)
		if err != nil {
			b.Fatal(err)
		}
		writeUpper(b, m, fmt.Sprintf("file-%d", i), "layer")
		name := fmt.Sprintf("layer-%d", i)
		if err := sn.Commit(ctx, name, key); err != nil {
			b.Fatal(err)
		}
		parent = name
	}
	return parent
}

// writeUpper writes a file straight into the writable layer of an active
// snapshot's mounts (the bind source, or the overlay upperdir).
func writeUpper(b *testing.B, ms []mount.Mount, name, data string) {
	b.Helper()
	dir := ""
	for _, m := range ms {
		switch m.Type {
		case "bind":
			dir = m.Source
		case "overlay":
			for _, o := range m.Options {
				if v, ok := strings.CutPrefix(o, "upperdir="); ok {
					dir = v
				}
			}
		}
	}
	if dir == "" {
		b.Fatalf("no writable layer in %+v", ms)
	}
	if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o644); err != nil {
		b.Fatal(err)
	}
}

// BenchmarkUsage times Usage of an active snapshot holding 100 dirs of 50
// small files each (strata walks dirs in parallel; containerd walks
// sequentially).
func BenchmarkUsage(b *testing.B) {
	testutil.RequireRoot(b)
	for _, impl := range []struct {
		name string
		open func(root string) (snapshots.Snapshotter, error)
	}{
		{"strata", func(root string) (snapshots.Snapshotter, error) { return Open(root) }},
		{"containerd", func(root string) (snapshots.Snapshotter, error) { return ctrdoverlay.NewSnapshotter(root) }},
	} {
		b.Run(impl.name, func(b *testing.B) {
			ctx := namespaces.WithNamespace(context.Background(), "bench")
			sn, err := impl.open(filepath.Join(b.TempDir(), "root"))
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { sn.Close() })
			m, err := sn.Prepare(ctx, "a", "")
			if err != nil {
				b.Fatal(err)
			}
			for d := range 100 {
				for f := range 50 {
					writeUpper(b, m, fmt.Sprintf("d%d-f%d", d, f), "x")
				}
			}
			// Move the files into their dirs (writeUpper writes at the top).
			upper := m[0].Source
			for d := range 100 {
				dir := filepath.Join(upper, fmt.Sprintf("d%d", d))
				if err := os.Mkdir(dir, 0o755); err != nil {
					b.Fatal(err)
				}
				for f := range 50 {
					n := fmt.Sprintf("d%d-f%d", d, f)
					if err := os.Rename(filepath.Join(upper, n), filepath.Join(dir, n)); err != nil {
						b.Fatal(err)
					}
				}
			}
			var u snapshots.Usage
			for b.Loop() {
				if u, err = sn.Usage(ctx, "a"); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(u.Inodes), "inodes")
		})
	}
}
