package bench

import (
	"bytes"
	"errors"
	"fmt"
	"hash/crc32"
	"io/fs"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/stratafs/strata/internal/testutil"
	"github.com/stratafs/strata/overlay"
	"golang.org/x/sys/unix"
)

// tinySpec is the smallest valid layer set: enough for every code path.
func tinySpec(seed uint64) Spec {
	return Spec{
		Seed: seed, Layers: 10, FilesPerLayer: 20, MeanFileSize: 512, MaxFileSize: 4096,
		LargeSize: 256 << 10, WideEntries: 200, WideLayers: 8, StatDepths: []int{1, 4},
		StatTargets: 10, TarFiles: 30, CreateFiles: 10, RandReads: 16, GitFiles: 40,
	}
}

// snapshotTree describes every object under root: type, mode, size,
// device number and content CRC, keyed by relative path.
func snapshotTree(t *testing.T, root string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		if strings.HasSuffix(p, overlay.IndexSuffix) || strings.HasSuffix(p, "/.git/index") {
			return nil // hold dev, inode numbers and ctimes: TestGenerateIndexes, TestGenerateGitStatus
		}
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			return err
		}
		desc := fmt.Sprintf("mode=%o size=%d rdev=%d", st.Mode, st.Size, st.Rdev)
		if d.Type().IsRegular() {
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			desc += fmt.Sprintf(" crc=%08x", crc32.Checksum(b, castagnoli))
		}
		if d.IsDir() {
			if op, err := (overlay.Format{}).DirOpacity(p); err == nil && op != overlay.NotOpaque {
				desc += " opaque"
			}
		}
		out[rel] = desc
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestGenerateDeterministic(t *testing.T) {
	testutil.RequireRoot(t) // whiteouts are char devices, opaque uses trusted xattrs
	a, err := Generate(filepath.Join(t.TempDir(), "a"), tinySpec(7))
	if err != nil {
		t.Fatal(err)
	}
	b, err := Generate(filepath.Join(t.TempDir(), "b"), tinySpec(7))
	if err != nil {
		t.Fatal(err)
	}
	c, err := Generate(filepath.Join(t.TempDir(), "c"), tinySpec(8))
	if err != nil {
		t.Fatal(err)
	}
	ta, tb, tc := snapshotTree(t, a.Root), snapshotTree(t, b.Root), snapshotTree(t, c.Root)
	if !maps.Equal(ta, tb) {
		for k, v := range ta {
			if tb[k] != v {
				t.Errorf("same seed, different trees at %s: %q vs %q", k, v, tb[k])
				break
			}
		}
		t.Fatalf("same seed gave different layer sets (%d vs %d objects)", len(ta), len(tb))
	}
	if !maps.Equal(a.Manifest, b.Manifest) || a.LargeCRC != b.LargeCRC || !slices.Equal(a.WideNames, b.WideNames) {
		t.Fatal("same seed gave different manifests")
	}
	if maps.Equal(ta, tc) || a.LargeCRC == c.LargeCRC {
		t.Fatal("different seeds gave the same layer set")
	}
	if len(a.WideNames) != a.Spec.WideEntries {
		t.Fatalf("wide dir: %d names, want %d", len(a.WideNames), a.Spec.WideEntries)
	}
}

func TestGenerateWhiteoutsAndOpaque(t *testing.T) {
	testutil.RequireRoot(t)
	ls, err := Generate(filepath.Join(t.TempDir(), "l"), tinySpec(3))
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for li, wos := range ls.Whiteouts {
		layer := ls.Main[len(ls.Main)-1-li]
		for _, rel := range wos {
			var st unix.Stat_t
			p := filepath.Join(layer, rel)
			if err := unix.Lstat(p, &st); err != nil {
				t.Fatalf("whiteout %s: %v", p, err)
			}
			if !overlay.IsWhiteoutStat(&st) {
				t.Fatalf("%s is not a char 0/0 whiteout (mode %o rdev %d)", p, st.Mode, st.Rdev)
			}
			n++
		}
	}
	// Expected: tree/gone, FilesPerLayer/20 per layer above the bottom,
	// and the hidden names of wide/.
	if want := 1 + (ls.Spec.Layers-1)*(ls.Spec.FilesPerLayer/20) + ls.Spec.WideEntries/50; n != want {
		t.Fatalf("%d whiteouts, want %d", n, want)
	}
	if _, ok := ls.Manifest["tree/gone"]; ok {
		t.Fatal("tree/gone is whited out but in the manifest")
	}
	opq := filepath.Join(ls.Main[len(ls.Main)-1-ls.OpaqueLayer], ls.OpaqueDir)
	if op, err := (overlay.Format{}).DirOpacity(opq); err != nil || op != overlay.Opaque {
		t.Fatalf("%s: opacity %v, %v; want opaque", opq, op, err)
	}
	for k := range ls.Manifest {
		if bytes.HasPrefix([]byte(k), []byte("opq/o")) {
			t.Fatalf("%s from below the opaque dir is in the manifest", k)
		}
	}

	// The flattened copy (the native baseline) must equal the manifest.
	flat := filepath.Join(t.TempDir(), "flat")
	if err := os.Mkdir(flat, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := Flatten(ls.Main, flat, overlay.Format{}); err != nil {
		t.Fatal(err)
	}
	got := map[string]Entry{}
	err = filepath.WalkDir(flat, func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == flat {
			return err
		}
		rel, _ := filepath.Rel(flat, p)
		if d.IsDir() {
			got[rel] = Entry{Dir: true}
			return nil
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		got[rel] = Entry{Size: int64(len(b)), CRC: crc32.Checksum(b, castagnoli)}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if !maps.Equal(got, ls.Manifest) {
		t.Fatalf("flattened main stack has %d objects, manifest %d", len(got), len(ls.Manifest))
	}
}

func TestFitSpecRefusesHugeSpec(t *testing.T) {
	s := tinySpec(1)
	s.TarFiles = 1 << 50 // petabytes of tarball
	if _, _, err := FitSpec(s, t.TempDir()); err == nil {
		t.Fatal("FitSpec accepted a spec that cannot fit")
	} else if !errors.Is(err, ErrNoSpace) {
		t.Fatalf("FitSpec: %v, want ErrNoSpace", err)
	}
}

// TestGenerateIndexes: every generated layer has a valid name index next
// to it (as a committed snapshot does), and nothing else gets one.
func TestGenerateIndexes(t *testing.T) {
	testutil.RequireRoot(t)
	ls, err := Generate(filepath.Join(t.TempDir(), "l"), tinySpec(5))
	if err != nil {
		t.Fatal(err)
	}
	layers := ls.Layers()
	if want := len(ls.Main) + slices.Max(ls.Spec.StatDepths) + len(ls.Git); len(layers) != want {
		t.Fatalf("%d layers, want %d", len(layers), want)
	}
	for _, l := range layers {
		if _, err := overlay.ReadIndexFile(overlay.IndexPath(l), l); err != nil {
			t.Errorf("layer %s: %v", l, err)
		}
	}
	n := 0
	err = filepath.WalkDir(ls.Root, func(p string, d fs.DirEntry, err error) error {
		if err == nil && strings.HasSuffix(p, overlay.IndexSuffix) {
			n++
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if n != len(layers) {
		t.Fatalf("%d index files under %s, want %d", n, ls.Root, len(layers))
	}
}

// TestGenerateGitStatus: git status in the flattened git stack (what a
// correct union shows) gives exactly the expected porcelain output.
func TestGenerateGitStatus(t *testing.T) {
	testutil.RequireRoot(t)
	git, err := exec.LookPath("git")
	if err != nil {
		t.Skip("git not installed")
	}
	ls, err := Generate(filepath.Join(t.TempDir(), "l"), tinySpec(9))
	if err != nil {
		t.Fatal(err)
	}
	if len(ls.Git) != 2 {
		t.Fatalf("git stack %v (%s), want 2 layers", ls.Git, ls.GitSkipped)
	}
	if n := strings.Count(ls.GitStatus, "\n"); n != 3+3+2 {
		t.Fatalf("expected status has %d lines, want 8:\n%s", n, ls.GitStatus)
	}
	flat := t.TempDir()
	if err := Flatten(ls.Git, flat, overlay.Format{}); err != nil {
		t.Fatal(err)
	}
	if _, err := gitStatus(ls, flat, Env{Git: git}); err != nil {
		t.Fatalf("%v\nwant:\n%s", err, ls.GitStatus)
	}
	// As native prepares its copy: same status after the index refresh.
	if err := gitRefresh(ls, flat); err != nil {
		t.Fatal(err)
	}
	if _, err := gitStatus(ls, flat, Env{Git: git}); err != nil {
		t.Fatalf("after refresh: %v\nwant:\n%s", err, ls.GitStatus)
	}
	// The bottom layer alone is a clean checkout: the check must fail.
	if _, err := gitStatus(ls, ls.Git[1], Env{Git: git}); !errors.Is(err, ErrWrongResult) {
		t.Fatalf("git status of the bottom layer: %v, want a wrong result", err)
	}
}
