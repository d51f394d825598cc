package reliability

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/stratafs/strata/internal/testutil"
	"github.com/stratafs/strata/overlay"
	"github.com/stratafs/strata/snapshot"
)

const lockChildEnv = "STRATA_LOCK_CHILD_ROOT"

// TestLockHolderChild opens the store and holds it until killed.
func TestLockHolderChild(t *testing.T) {
	root := os.Getenv(lockChildEnv)
	if root == "" {
		t.Skip("run by TestCrashedOwnerReleasesLock in a child process")
	}
	s, err := snapshot.Open(root)
	if err != nil {
		t.Fatal(err)
	}
	_ = s
	fmt.Println("OPENED")
	select {}
}

// TestCrashedOwnerReleasesLock: while a child process owns the store, an
// Open fails fast with ErrLocked naming the child; once the child is
// SIGKILLed (no Close, its owner file stays behind), the next Open works
// and the store checks clean.
func TestCrashedOwnerReleasesLock(t *testing.T) {
	root := filepath.Join(t.TempDir(), "store")
	s, err := snapshot.Open(root)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.ImportTar(context.Background(), "base", "", bytes.NewReader(mkTar(t, file("f", "x"))), nil); err != nil {
		t.Fatal(err)
	}
	s.Close()

	cmd := exec.Command(os.Args[0], "-test.run=^TestLockHolderChild$", "-test.count=1")
	cmd.Env = append(os.Environ(), lockChildEnv+"="+root)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil || strings.TrimSpace(line) != "OPENED" {
		t.Fatalf("child: %q, %v", line, err)
	}
	_, err = snapshot.Open(root)
	if !errors.Is(err, snapshot.ErrLocked) || !strings.Contains(err.Error(), "pid "+strconv.Itoa(cmd.Process.Pid)) {
		t.Fatalf("open while the child owns the store: %v; want ErrLocked naming pid %d", err, cmd.Process.Pid)
	}
	cmd.Process.Signal(syscall.SIGKILL)
	cmd.Wait()
	go io.Copy(io.Discard, out)

	s, err = snapshot.Open(root)
	if err != nil {
		t.Fatalf("open after the owner was killed: %v", err)
	}
	defer s.Close()
	if err := s.Check(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Stat(context.Background(), "base"); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(filepath.Join(root, "owner"))
	if !strings.Contains(string(b), "pid "+strconv.Itoa(os.Getpid())+"\n") {
		t.Errorf("owner file after takeover names someone else:\n%s", b)
	}
}

// TestConcurrentImportsDiffsCopyUps runs imports (several racing for each
// name), diffs, Cleanup and copy-ups of the same paths on one stack from
// many goroutines (run it under -race). Exactly one import per name wins;
// the losers get ErrAlreadyExists and leave nothing behind; every copy-up
// returns a whole copy; the store checks clean.
func TestConcurrentImportsDiffsCopyUps(t *testing.T) {
	testutil.RequireRoot(t)
	sb := newSandbox(t)
	s := sb.open(t)
	ctx := context.Background()
	if _, _, err := s.ImportTar(ctx, "base", "", bytes.NewReader(layerTar(t, "base")), nil); err != nil {
		t.Fatal(err)
	}
	const workers, names = 8, 6
	var wg sync.WaitGroup
	errs := make(chan error, 100)
	won := make([]int32, names)
	var mu sync.Mutex
	for w := range workers {
		wg.Go(func() {
			for i := range names {
				name := fmt.Sprintf("l%d", i)
				_, _, err := s.ImportTar(ctx, name, "base", bytes.NewReader(layerTar(t, name)), nil)
				switch {
				case err == nil:
					mu.Lock()
					won[i]++
					mu.Unlock()
				case errors.Is(err, snapshot.ErrAlreadyExists):
				default:
					errs <- fmt.Errorf("worker %d import %s: %w", w, name, err)
				}
				if _, err := s.Diff(ctx, io.Discard, "base"); err != nil {
					errs <- err
				}
				if w == 0 && i%2 == 0 {
					if err := s.Cleanup(ctx); err != nil {
						errs <- err
					}
				}
			}
		})
	}
	// Copy-ups of the same files from several goroutines on one stack.
	ms, err := s.Prepare(ctx, "active", "base")
	if err != nil {
		t.Fatal(err)
	}
	up, work, lowers := mountDirs(ms)
	st, err := overlay.NewStack(lowers, overlay.WithUpper(up, work))
	if err != nil {
		t.Fatal(err)
	}
	files := layerFiles("base")
	for range 4 {
		wg.Go(func() {
			for p := range files {
				if _, err := st.CopyUp(p); err != nil {
					errs <- err
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	for i, n := range won {
		if n != 1 {
			t.Errorf("l%d imported %d times", i, n)
		}
	}
	for p, c := range files {
		if b, err := os.ReadFile(filepath.Join(up, p)); err != nil || string(b) != c {
			t.Errorf("copy-up of %s: %d bytes, %v; want %d", p, len(b), err, len(c))
		}
	}
	stagingEmpty(t, sb.root)
	if err := s.Check(ctx); err != nil {
		t.Error(err)
	}
}
