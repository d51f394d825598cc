package reliability

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stratafs/strata/internal/fstree"
	"github.com/stratafs/strata/internal/testutil"
	"github.com/stratafs/strata/overlay"
	"github.com/stratafs/strata/snapshot"
)

// The crash harness: TestCrash re-executes the test binary as a child
// running TestCrashChild, which works on a store in a loop (ImportTar,
// Prepare + write + Commit, Remove, Prepare + Stack.CopyUp), and SIGKILLs
// it at a random moment. After each kill it reopens the store and checks:
//
//   - Check is clean after Open (Open must repair what a crash leaves);
//   - every committed layer has exactly the content its name stands for
//     (contents are a function of the name), and the content hash the
//     child journalled after the commit still matches;
//   - a journalled layer is missing only if the child meant to remove it;
//   - every copy-up in an active snapshot is whole (upper file content
//     equals the lower one), and Stack.CleanWork leaves no temporaries.
//
// STRATA_CRASH_SEED (default: time-based, logged) and STRATA_CRASH_KILLS
// (default 20, or 300 with STRATA_STRESS=1) bound it.

const (
	crashRootEnv = "STRATA_CRASH_CHILD_ROOT"
	crashSeedEnv = "STRATA_CRASH_CHILD_SEED"
)

// layerFiles is the content a layer name stands for: a few files in a
// few dirs, sizes from 0 to 96 KiB.
func layerFiles(name string) map[string]string {
	h := fnv.New64a()
	h.Write([]byte(name))
	rng := rand.New(rand.NewPCG(h.Sum64(), 1))
	files := map[string]string{}
	n := 1 + rng.IntN(12)
	for i := range n {
		p := fmt.Sprintf("d%d/f%d", rng.IntN(3), i)
		if rng.IntN(4) == 0 {
			p = fmt.Sprintf("top%d", i)
		}
		size := rng.IntN(96 << 10)
		if rng.IntN(3) == 0 {
			size = rng.IntN(64)
		}
		files[p] = strings.Repeat(name+"/"+p+";", size/(len(name)+len(p)+2)+1)[:size]
	}
	return files
}

func layerTar(t testing.TB, name string) []byte {
	files := layerFiles(name)
	var hs []hdr
	for _, p := range slices.Sorted(mapsKeys(files)) {
		hs = append(hs, file(p, files[p]))
	}
	return mkTar(t, hs...)
}

func mapsKeys(m map[string]string) func(func(string) bool) {
	return func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

// treeHash is a content hash of a layer dir: fstree's snapshot without
// the root's own metadata and without atimes.
func treeHash(dir string) (string, error) {
	tr, err := fstree.Snapshot(dir)
	if err != nil {
		return "", err
	}
	delete(tr, ".")
	for _, n := range tr {
		n.Atime = time.Time{}
	}
	b, err := json.Marshal(tr) // map keys are sorted
	if err != nil {
		return "", err
	}
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:]), nil
}

// mountDirs parses a snapshot's mounts into its upper dir, work dir and
// lower dirs (top first).
func mountDirs(ms []snapshot.Mount) (upper, work string, lowers []string) {
	for _, m := range ms {
		if m.Type == "bind" {
			return m.Source, "", nil
		}
		for _, o := range m.Options {
			switch {
			case strings.HasPrefix(o, "upperdir="):
				upper = strings.TrimPrefix(o, "upperdir=")
			case strings.HasPrefix(o, "workdir="):
				work = strings.TrimPrefix(o, "workdir=")
			case strings.HasPrefix(o, "lowerdir="):
				lowers = strings.Split(strings.TrimPrefix(o, "lowerdir="), ":")
			}
		}
	}
	return upper, work, lowers
}

// committedDir is the own layer dir of the committed snapshot name.
func committedDir(ctx context.Context, s *snapshot.Store, name string) (string, error) {
	ms, err := s.Mounts(ctx, name)
	if err != nil {
		return "", err
	}
	up, _, lowers := mountDirs(ms)
	if len(lowers) > 0 {
		return lowers[0], nil
	}
	return up, nil
}

// writeJournal writes dir/name atomically.
func writeJournal(dir, name, content string) error {
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p+".tmp", []byte(content), 0o644); err != nil {
		return err
	}
	return os.Rename(p+".tmp", p)
}

// TestCrashChild is the child of TestCrash; it runs until killed.
func TestCrashChild(t *testing.T) {
	root := os.Getenv(crashRootEnv)
	if root == "" {
		t.Skip("run by TestCrash in a child process")
	}
	seed := uint64(envInt(t, crashSeedEnv, 1))
	rng := rand.New(rand.NewPCG(seed, 2))
	journal := filepath.Join(filepath.Dir(root), "journal")
	ctx := context.Background()
	s, err := snapshot.Open(root, snapshot.WithLockTimeout(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	fmt.Println("CHILD READY")
	committed := func() []snapshot.Info {
		var is []snapshot.Info
		s.Walk(ctx, func(_ context.Context, i snapshot.Info) error {
			if i.Kind == snapshot.KindCommitted {
				is = append(is, i)
			}
			return nil
		})
		return is
	}
	pick := func() string {
		is := committed()
		if len(is) == 0 || rng.IntN(4) == 0 {
			return ""
		}
		return is[rng.IntN(len(is))].Name
	}
	record := func(name string) {
		dir, err := committedDir(ctx, s, name)
		if err != nil {
			t.Fatal(err)
		}
		h, err := treeHash(dir)
		if err != nil {
			t.Fatal(err)
		}
		if err := writeJournal(journal, name, h); err != nil {
			t.Fatal(err)
		}
	}
	for i := 0; ; i++ {
		name := fmt.Sprintf("s%d-%d", seed, i)
		switch op := rng.IntN(10); {
		case op < 4: // import
			if _, _, err := s.ImportTar(ctx, name, pick(), bytes.NewReader(layerTar(t, name)), nil); err != nil {
				t.Fatal(err)
			}
			record(name)
		case op < 6: // prepare, write, commit
			key := "w-" + name
			ms, err := s.Prepare(ctx, key, pick())
			if err != nil {
				t.Fatal(err)
			}
			up, _, _ := mountDirs(ms)
			for p, c := range layerFiles(name) {
				os.MkdirAll(filepath.Join(up, filepath.Dir(p)), 0o755)
				if err := os.WriteFile(filepath.Join(up, p), []byte(c), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			if err := s.Commit(ctx, name, key); err != nil {
				t.Fatal(err)
			}
			record(name)
		case op < 8: // remove a committed leaf (refused if it has children)
			is := committed()
			if len(is) < 3 {
				continue
			}
			victim := is[rng.IntN(len(is))].Name
			if err := writeJournal(journal, victim+".rm", ""); err != nil {
				t.Fatal(err)
			}
			if err := s.Remove(ctx, victim); err != nil && !errors.Is(err, snapshot.ErrFailedPrecondition) {
				t.Fatal(err)
			}
		default: // copy-up in an active snapshot
			parent := pick()
			if parent == "" {
				continue
			}
			ms, err := s.Prepare(ctx, "a-"+name, parent)
			if err != nil {
				t.Fatal(err)
			}
			up, work, lowers := mountDirs(ms)
			st, err := overlay.NewStack(lowers, overlay.WithUpper(up, work))
			if err != nil {
				t.Fatal(err)
			}
			for _, l := range lowers {
				filepath.WalkDir(l, func(p string, d os.DirEntry, err error) error {
					if err == nil && d.Type().IsRegular() {
						rel, _ := filepath.Rel(l, p)
						if _, err := st.CopyUp(rel); err != nil {
							t.Fatal(err)
						}
					}
					return nil
				})
			}
		}
	}
}

// TestCrash is the parent: see the comment at the top of the file.
func TestCrash(t *testing.T) {
	testutil.RequireRoot(t) // trusted.* xattrs in copy-up
	seed := envInt(t, "STRATA_CRASH_SEED", time.Now().UnixNano()%1_000_000)
	kills := envInt(t, "STRATA_CRASH_KILLS", 20)
	if stress() && os.Getenv("STRATA_CRASH_KILLS") == "" {
		kills = 300
	}
	t.Logf("STRATA_CRASH_SEED=%d STRATA_CRASH_KILLS=%d", seed, kills)
	rng := rand.New(rand.NewPCG(uint64(seed), 3))
	dir := t.TempDir()
	root := filepath.Join(dir, "store")
	journal := filepath.Join(dir, "journal")
	if err := os.Mkdir(journal, 0o755); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	var repaired, layersChecked int
	for k := range kills {
		cmd := exec.Command(os.Args[0], "-test.run=^TestCrashChild$", "-test.count=1")
		cmd.Env = append(os.Environ(), crashRootEnv+"="+root, fmt.Sprintf("%s=%d", crashSeedEnv, seed*1000+k))
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		// Kill it 30..230 ms after the start (startup takes a few ms).
		time.Sleep(time.Duration(30+rng.IntN(200)) * time.Millisecond)
		cmd.Process.Signal(syscall.SIGKILL)
		err := cmd.Wait()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
			t.Fatalf("kill %d: child did not die by SIGKILL (%v):\n%s", k, err, out.String())
		}

		s, err := snapshot.Open(root)
		if err != nil {
			t.Fatalf("kill %d: reopen: %v", k, err)
		}
		if err := s.Check(ctx); err != nil {
			t.Errorf("kill %d: Check after Open: %v", k, err)
			if err := s.Cleanup(ctx); err != nil {
				t.Fatalf("kill %d: cleanup: %v", k, err)
			}
			if err := s.Check(ctx); err != nil {
				t.Fatalf("kill %d: Check after Cleanup: %v", k, err)
			}
			repaired++
		}
		layersChecked += verifyCrashStore(t, ctx, s, journal, k)
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		if t.Failed() {
			t.Logf("child output:\n%s", out.String())
			return
		}
	}
	t.Logf("%d kills survived, %d layer verifications, %d stores repaired by Cleanup", kills, layersChecked, repaired)
}

// verifyCrashStore checks the layers and copy-ups of the store after a
// kill; it returns how many committed layers it verified.
func verifyCrashStore(t *testing.T, ctx context.Context, s *snapshot.Store, journal string, k int64) int {
	t.Helper()
	var infos []snapshot.Info
	if err := s.Walk(ctx, func(_ context.Context, i snapshot.Info) error { infos = append(infos, i); return nil }); err != nil {
		t.Fatal(err)
	}
	present := map[string]bool{}
	n := 0
	for _, i := range infos {
		present[i.Name] = true
		switch i.Kind {
		case snapshot.KindCommitted:
			n++
			dir, err := committedDir(ctx, s, i.Name)
			if err != nil {
				t.Fatal(err)
			}
			want := layerFiles(i.Name)
			got := map[string]string{}
			filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
				if err != nil {
					t.Errorf("kill %d: walk %s: %v", k, p, err)
					return nil
				}
				if !d.IsDir() {
					rel, _ := filepath.Rel(dir, p)
					b, _ := os.ReadFile(p)
					got[rel] = string(b)
				}
				return nil
			})
			if len(got) != len(want) {
				t.Errorf("kill %d: committed %q has %d files, want %d: a partial layer is visible", k, i.Name, len(got), len(want))
			}
			for p, c := range want {
				if got[p] != c {
					t.Errorf("kill %d: committed %q: %s has %d bytes, want %d", k, i.Name, p, len(got[p]), len(c))
				}
			}
			if h, err := os.ReadFile(filepath.Join(journal, i.Name)); err == nil {
				now, err := treeHash(dir)
				if err != nil {
					t.Fatal(err)
				}
				if now != string(h) {
					t.Errorf("kill %d: committed %q: content hash changed since its commit", k, i.Name)
				}
			}
		case snapshot.KindActive:
			if strings.HasPrefix(i.Name, "import-") {
				t.Errorf("kill %d: a half-done import is still visible as %q", k, i.Name)
			}
			if !strings.HasPrefix(i.Name, "a-") {
				continue
			}
			ms, err := s.Mounts(ctx, i.Name)
			if err != nil {
				t.Fatal(err)
			}
			up, work, lowers := mountDirs(ms)
			st, err := overlay.NewStack(lowers, overlay.WithUpper(up, work))
			if err != nil {
				t.Fatal(err)
			}
			if err := st.CleanWork(); err != nil {
				t.Errorf("kill %d: CleanWork: %v", k, err)
			}
			if ents, _ := os.ReadDir(filepath.Join(work, "work")); len(ents) > 0 {
				t.Errorf("kill %d: %s: temporaries left after CleanWork: %v", k, i.Name, ents)
			}
			filepath.WalkDir(up, func(p string, d os.DirEntry, err error) error {
				if err != nil || !d.Type().IsRegular() {
					return nil
				}
				rel, _ := filepath.Rel(up, p)
				got, _ := os.ReadFile(p)
				for _, l := range lowers {
					if want, err := os.ReadFile(filepath.Join(l, rel)); err == nil {
						if !bytes.Equal(got, want) {
							t.Errorf("kill %d: %s: copy-up of %s is partial (%d of %d bytes)", k, i.Name, rel, len(got), len(want))
						}
						return nil
					}
				}
				t.Errorf("kill %d: %s: %s in upper has no lower", k, i.Name, rel)
				return nil
			})
		}
	}
	ents, err := os.ReadDir(journal)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		name := e.Name()
		if strings.HasSuffix(name, ".rm") || strings.HasSuffix(name, ".tmp") || present[name] {
			continue
		}
		if _, err := os.Stat(filepath.Join(journal, name+".rm")); err != nil {
			t.Errorf("kill %d: committed %q vanished without a Remove", k, name)
		}
	}
	return n
}
