package reliability

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/stratafs/strata/internal/testutil"
	"github.com/stratafs/strata/overlay"
	"github.com/stratafs/strata/snapshot"
)

// smallFS mounts a fresh 64 MiB ext4 (a sparse image on a loop device)
// and returns its mount point; t.Cleanup unmounts it (which frees the
// loop device: mount -o loop sets autoclear).
func smallFS(t *testing.T) string {
	t.Helper()
	testutil.RequireRoot(t)
	if _, err := exec.LookPath("mkfs.ext4"); err != nil {
		testutil.Unavailable(t, "mkfs.ext4 not found (Debian package e2fsprogs)")
	}
	dir := t.TempDir()
	img, mnt := filepath.Join(dir, "img"), filepath.Join(dir, "mnt")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	f, err := os.Create(img)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(64 << 20); err != nil { // sparse
		t.Fatal(err)
	}
	f.Close()
	if out, err := exec.Command("mkfs.ext4", "-q", "-F", img).CombinedOutput(); err != nil {
		t.Fatalf("mkfs.ext4: %v\n%s", err, out)
	}
	if out, err := exec.Command("mount", "-o", "loop", img, mnt).CombinedOutput(); err != nil {
		testutil.Unavailable(t, fmt.Sprintf("mount -o loop: %v: %s", err, out))
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", mnt).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v\n%s", mnt, err, out)
			exec.Command("umount", "-l", mnt).Run()
		}
	})
	return mnt
}

func freeBytes(t *testing.T, dir string) int64 {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		t.Fatal(err)
	}
	return int64(st.Bavail) * st.Bsize
}

// bigLayer streams a tar with one file of size bytes of incompressible
// data, without holding it in memory.
func bigLayer(size int64) io.Reader {
	pr, pw := io.Pipe()
	go func() {
		tw := tar.NewWriter(pw)
		if err := tw.WriteHeader(&tar.Header{Name: "big", Typeflag: tar.TypeReg, Mode: 0o644, Size: size}); err != nil {
			pw.CloseWithError(err)
			return
		}
		rng := rand.NewChaCha8([32]byte{1})
		if _, err := io.CopyN(tw, rng, size); err != nil {
			pw.CloseWithError(err)
			return
		}
		pw.CloseWithError(tw.Close())
	}()
	return pr
}

// manyFiles streams a tar of n empty files (to run out of inodes).
func manyFiles(n int) io.Reader {
	pr, pw := io.Pipe()
	go func() {
		tw := tar.NewWriter(pw)
		for i := range n {
			if err := tw.WriteHeader(&tar.Header{Name: fmt.Sprintf("f%d", i), Typeflag: tar.TypeReg, Mode: 0o644}); err != nil {
				pw.CloseWithError(err)
				return
			}
		}
		pw.CloseWithError(tw.Close())
	}()
	return pr
}

// fill takes all free space of the fs at dir with a file; removing it
// frees the space again.
func fill(t *testing.T, dir string) string {
	t.Helper()
	p := filepath.Join(dir, "filler")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if n := freeBytes(t, dir); n > 0 {
		unix.Fallocate(int(f.Fd()), 0, 0, n)
	}
	buf := make([]byte, 4096)
	for {
		if _, err := f.Write(buf); err != nil {
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatal(err)
			}
			break
		}
	}
	return p
}

// afterENOSPC checks the store after a failed operation: only the wanted
// snapshots, nothing in staging, Check clean.
func afterENOSPC(t *testing.T, s *snapshot.Store, err error, want ...string) {
	t.Helper()
	if !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("err = %v, want one wrapping ENOSPC", err)
	}
	t.Logf("error: %v", err)
	ks := keys(t, s)
	if fmt.Sprint(ks) != fmt.Sprint(want) {
		t.Errorf("snapshots %v, want %v", ks, want)
	}
	stagingEmpty(t, s.Root())
	if err := s.Check(context.Background()); err != nil {
		t.Errorf("check: %v", err)
	}
}

// TestImportENOSPC: imports that run out of blocks or of inodes fail with
// ENOSPC, leave nothing behind and give the space back; the next import
// succeeds.
func TestImportENOSPC(t *testing.T) {
	mnt := smallFS(t)
	root := filepath.Join(mnt, "store")
	s, err := snapshot.Open(root)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close(); checkStore(t, root) })
	ctx := context.Background()
	if _, _, err := s.ImportTar(ctx, "base", "", bytes.NewReader(mkTar(t, file("f", "base"))), nil); err != nil {
		t.Fatal(err)
	}
	free := freeBytes(t, mnt)

	t.Run("Blocks", func(t *testing.T) {
		_, _, err := s.ImportTar(ctx, "big", "base", bigLayer(free+(8<<20)), nil)
		afterENOSPC(t, s, err, "base")
		if now := freeBytes(t, mnt); now < free-(1<<20) {
			t.Errorf("free space %d after the failed import, %d before: partial data kept", now, free)
		}
	})
	t.Run("Inodes", func(t *testing.T) {
		_, _, err := s.ImportTar(ctx, "many", "base", manyFiles(40000), nil)
		afterENOSPC(t, s, err, "base")
	})
	t.Run("FullDiskMetadata", func(t *testing.T) {
		filler := fill(t, mnt)
		_, _, err := s.ImportTar(ctx, "tiny", "base", bytes.NewReader(mkTar(t, file("t", "x"))), nil)
		if err == nil {
			t.Log("a tiny import fit in the reserved blocks of a full disk")
			if err := s.Remove(ctx, "tiny"); err != nil {
				t.Fatal(err)
			}
		} else {
			afterENOSPC(t, s, err, "base")
		}
		if err := os.Remove(filler); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("WorksAfterFreeing", func(t *testing.T) {
		if _, _, err := s.ImportTar(ctx, "after", "base", bigLayer(8<<20), nil); err != nil {
			t.Fatalf("import after freeing space: %v", err)
		}
	})
}

// TestCopyUpENOSPC: a copy-up that runs out of space fails with ENOSPC
// and leaves neither a partial file in the upper layer nor a temporary in
// the work dir; after freeing space it succeeds.
func TestCopyUpENOSPC(t *testing.T) {
	mnt := smallFS(t)
	root := filepath.Join(mnt, "store")
	s, err := snapshot.Open(root)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close(); checkStore(t, root) })
	ctx := context.Background()
	if _, _, err := s.ImportTar(ctx, "base", "", bigLayer(16<<20), nil); err != nil {
		t.Fatal(err)
	}
	ms, err := s.Prepare(ctx, "active", "base")
	if err != nil {
		t.Fatal(err)
	}
	up, work, lowers := mountDirs(ms)
	st, err := overlay.NewStack(lowers, overlay.WithUpper(up, work))
	if err != nil {
		t.Fatal(err)
	}
	// Leave 4 MiB: the 16 MiB copy-up can't fit.
	filler := fill(t, mnt)
	if err := os.Truncate(filler, mustSize(t, filler)-(4<<20)); err != nil {
		t.Fatal(err)
	}
	_, err = st.CopyUp("big")
	if !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("copy-up on a full disk: %v, want ENOSPC", err)
	}
	t.Logf("error: %v", err)
	if _, err := os.Lstat(filepath.Join(up, "big")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("partial copy-up in the upper layer: %v", err)
	}
	if ents, _ := os.ReadDir(filepath.Join(work, "work")); len(ents) > 0 {
		t.Errorf("temporaries left in the work dir: %v", ents)
	}
	if err := s.Check(ctx); err != nil {
		t.Errorf("check: %v", err)
	}
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	if _, err := st.CopyUp("big"); err != nil {
		t.Fatalf("copy-up after freeing space: %v", err)
	}
}

func mustSize(t *testing.T, p string) int64 {
	fi, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Size()
}
