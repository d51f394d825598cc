package snapshot_test

import (
	"bufio"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/stratafs/strata/internal/selfexec"
	"github.com/stratafs/strata/internal/testutil"
	"github.com/stratafs/strata/overlay"
	"github.com/stratafs/strata/snapshot"
)

func TestMain(m *testing.M) {
	selfexec.Main() // the FUSE backend's servers run as this binary
	code := m.Run()
	selfexec.Cleanup()
	os.Exit(code)
}

// openFUSE opens a FUSE-backend store at root whose servers run as this
// test binary. When the test ends every mount under root is detached (the
// servers exit with them).
func openFUSE(t *testing.T, root string) *snapshot.Store {
	t.Helper()
	s, err := snapshot.Open(root, snapshot.WithBackend(snapshot.BackendFUSE), snapshot.WithServerCommand(selfexec.Command))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// detachAllUnder detaches every mount at or below root when t ends.
func detachAllUnder(t *testing.T, root string) {
	t.Cleanup(func() {
		for _, mp := range mountsUnder(t, root) {
			_ = unix.Unmount(mp, unix.MNT_DETACH)
		}
	})
}

func mountsUnder(t *testing.T, root string) []string {
	t.Helper()
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fs := strings.Fields(sc.Text())
		if len(fs) > 4 && (fs[4] == root || strings.HasPrefix(fs[4], root+"/")) {
			out = append(out, fs[4])
		}
	}
	slices.Reverse(out) // children first
	return out
}

// bind mounts m (one bind mount) on a new dir, as a runtime mounts a
// rootfs, and returns the dir; it is unmounted when t ends.
func bind(t *testing.T, ms []snapshot.Mount) string {
	t.Helper()
	if len(ms) != 1 || ms[0].Type != "bind" || !filepath.IsAbs(ms[0].Source) {
		t.Fatalf("want one bind mount of an absolute path, got %+v", ms)
	}
	dst := t.TempDir()
	if err := unix.Mount(ms[0].Source, dst, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
		t.Fatal(err)
	}
	if slices.Contains(ms[0].Options, "ro") {
		if err := unix.Mount("", dst, "", unix.MS_REMOUNT|unix.MS_BIND|unix.MS_RDONLY, ""); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() { _ = unix.Unmount(dst, unix.MNT_DETACH) })
	return dst
}

func unmount(t *testing.T, dir string) {
	t.Helper()
	if err := unix.Unmount(dir, 0); err != nil {
		t.Fatal(err)
	}
}

func write(t *testing.T, p, content string) {
	t.Helper()
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func read(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// serverPid is the pid of the last server that logged to log.
func serverPid(t *testing.T, log string) int {
	t.Helper()
	m := regexp.MustCompile(`strata-fuse\[(\d+)\]`).FindAllStringSubmatch(read(t, log), -1)
	if m == nil {
		t.Fatalf("no pid in %s", log)
	}
	pid, _ := strconv.Atoi(m[len(m)-1][1])
	return pid
}

// waitGone waits for pid to exit (an ordering wait, not a timing check).
func waitGone(t *testing.T, pid int) {
	t.Helper()
	for range 1000 {
		if err := unix.Kill(pid, 0); errors.Is(err, unix.ESRCH) {
			return
		}
		// exited, not yet reaped by its new parent (init)
		if b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat"); err != nil || strings.Contains(string(b), ") Z ") {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("process %d still running", pid)
}

// mountsDirOf returns the FUSE mount point a Mounts result binds.
func fuseMount(t *testing.T, root string, ms []snapshot.Mount) string {
	t.Helper()
	if len(ms) != 1 || filepath.Dir(ms[0].Source) != filepath.Join(root, "mounts") {
		t.Fatalf("want a bind of %s/mounts/<id>, got %+v", root, ms)
	}
	return ms[0].Source
}

func TestFUSEBackend_PrepareWriteCommitView(t *testing.T) {
	testutil.RequireFUSE(t)
	ctx := context.Background()
	root := filepath.Join(t.TempDir(), "store")
	detachAllUnder(t, root)
	s := openFUSE(t, root)
	defer s.Close()

	// base layer: no parent, so a plain bind mount of its own dir
	ms, err := s.Prepare(ctx, "base-a", "")
	must(t, err)
	if ms[0].Source == "" || strings.HasPrefix(ms[0].Source, filepath.Join(root, "mounts")) {
		t.Fatalf("snapshot without parent: want a bind of its fs dir, got %+v", ms)
	}
	dir := bind(t, ms)
	write(t, filepath.Join(dir, "keep"), "k")
	write(t, filepath.Join(dir, "gone"), "g")
	must(t, os.Mkdir(filepath.Join(dir, "d"), 0o755))
	write(t, filepath.Join(dir, "d", "x"), "x")
	unmount(t, dir)
	must(t, s.Commit(ctx, "base", "base-a"))

	// container on base: a FUSE server
	ms, err = s.Prepare(ctx, "c1", "base")
	must(t, err)
	mp := fuseMount(t, root, ms)
	equalStr(t, "rw", ms[0].Options[0])
	rootfs := bind(t, ms)
	equalStr(t, "k", read(t, filepath.Join(rootfs, "keep")))
	write(t, filepath.Join(rootfs, "new"), "n")
	write(t, filepath.Join(rootfs, "keep"), "k2")
	must(t, os.Remove(filepath.Join(rootfs, "gone")))
	must(t, os.Rename(filepath.Join(rootfs, "d"), filepath.Join(rootfs, "d2")))
	pid := serverPid(t, mp+".log")
	// Mounts hands out the same live mount
	ms2, err := s.Mounts(ctx, "c1")
	must(t, err)
	equalStr(t, mp, ms2[0].Source)
	must(t, s.Check(ctx))

	unmount(t, rootfs)
	must(t, s.Commit(ctx, "top", "c1"))
	waitGone(t, pid)
	if _, err := os.Lstat(mp); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("mount point %s left after commit: %v", mp, err)
	}

	// a view of both layers: FUSE, read-only; the union as written
	ms, err = s.View(ctx, "v", "top")
	must(t, err)
	vmp := fuseMount(t, root, ms)
	equalStr(t, "ro", ms[0].Options[0])
	view := bind(t, ms)
	equalStr(t, "k2", read(t, filepath.Join(view, "keep")))
	equalStr(t, "n", read(t, filepath.Join(view, "new")))
	equalStr(t, "x", read(t, filepath.Join(view, "d2", "x")))
	for _, n := range []string{"gone", "d"} {
		if _, err := os.Lstat(filepath.Join(view, n)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s: want gone, got %v", n, err)
		}
	}
	if err := os.WriteFile(filepath.Join(view, "w"), nil, 0o644); !errors.Is(err, syscall.EROFS) {
		t.Fatalf("view write: want EROFS, got %v", err)
	}
	// the committed layer is in kernel format: a whiteout for "gone"
	var st unix.Stat_t
	for _, l := range mountsUnder(t, root) {
		t.Logf("mounted: %s", l)
	}
	ents, _ := os.ReadDir(filepath.Join(root, "snapshots"))
	found := false
	for _, e := range ents {
		if err := unix.Lstat(filepath.Join(root, "snapshots", e.Name(), "fs", "gone"), &st); err == nil && overlay.IsWhiteoutStat(&st) {
			found = true
		}
	}
	if !found {
		t.Error("no whiteout for gone in any layer")
	}
	vpid := serverPid(t, vmp+".log")
	unmount(t, view)
	must(t, s.Remove(ctx, "v"))
	waitGone(t, vpid)
	if ms := mountsUnder(t, root); len(ms) != 0 {
		t.Fatalf("mounts left under the store: %v", ms)
	}
	must(t, s.Check(ctx))
}

func TestFUSEBackend_ServersOutliveRestart(t *testing.T) {
	testutil.RequireFUSE(t)
	ctx := context.Background()
	root := filepath.Join(t.TempDir(), "store")
	detachAllUnder(t, root)
	s := openFUSE(t, root)
	ms, err := s.Prepare(ctx, "b-a", "")
	must(t, err)
	write(t, filepath.Join(ms[0].Source, "f"), "base")
	must(t, s.Commit(ctx, "b", "b-a"))
	ms, err = s.Prepare(ctx, "c", "b")
	must(t, err)
	mp := fuseMount(t, root, ms)
	rootfs := bind(t, ms)
	pid := serverPid(t, mp+".log")
	must(t, s.Close())

	// the store's owner goes; the container's rootfs stays served
	write(t, filepath.Join(rootfs, "during"), "1")
	s = openFUSE(t, root)
	if got := serverPid(t, mp+".log"); got != pid {
		t.Fatalf("reopen restarted a live server: pid %d, was %d", got, pid)
	}
	equalStr(t, "1", read(t, filepath.Join(rootfs, "during")))
	must(t, s.Check(ctx))

	// a dead server: Check reports it, Mounts never hands it out
	must(t, unix.Kill(pid, unix.SIGKILL))
	waitGone(t, pid)
	if _, err := os.ReadDir(rootfs); err == nil {
		t.Fatal("rootfs of a killed server still answers")
	}
	if err := s.Check(ctx); !errors.Is(err, snapshot.ErrInconsistent) || !strings.Contains(err.Error(), "dead fuse mount at "+mp) {
		t.Fatalf("check: want a dead mount reported, got %v", err)
	}
	ms, err = s.Mounts(ctx, "c")
	must(t, err)
	equalStr(t, "base", read(t, filepath.Join(ms[0].Source, "f")))
	equalStr(t, "1", read(t, filepath.Join(ms[0].Source, "during")))
	pid2 := serverPid(t, mp+".log")
	if pid2 == pid {
		t.Fatal("no new server")
	}

	// and Open does the same for a server that died while no one owned the store
	must(t, s.Close())
	must(t, unix.Kill(pid2, unix.SIGKILL))
	waitGone(t, pid2)
	s = openFUSE(t, root)
	defer s.Close()
	var sf unix.Statfs_t
	must(t, unix.Statfs(mp, &sf))
	must(t, s.Check(ctx))
	unmount(t, rootfs)
	must(t, s.Remove(ctx, "c"))
	must(t, s.Remove(ctx, "b"))
	if ms := mountsUnder(t, root); len(ms) != 0 {
		t.Fatalf("mounts left under the store: %v", ms)
	}
}

func TestFUSEBackend_ServerFailsPrepareFails(t *testing.T) {
	testutil.RequireRoot(t)
	ctx := context.Background()
	root := filepath.Join(t.TempDir(), "store")
	detachAllUnder(t, root)
	s, err := snapshot.Open(root, snapshot.WithBackend(snapshot.BackendFUSE),
		snapshot.WithServerCommand(func([]string) *exec.Cmd { return exec.Command("false") }))
	must(t, err)
	defer s.Close()
	_, err = s.Prepare(ctx, "b-a", "")
	must(t, err) // no server needed
	must(t, s.Commit(ctx, "b", "b-a"))
	if _, err := s.Prepare(ctx, "c", "b"); err == nil {
		t.Fatal("prepare succeeded without a server")
	}
	if _, err := s.Stat(ctx, "c"); !errors.Is(err, snapshot.ErrNotFound) {
		t.Fatalf("failed prepare left the snapshot: %v", err)
	}
	must(t, s.Check(ctx))
}

func equalStr(t *testing.T, want, got string) {
	t.Helper()
	if want != got {
		t.Fatalf("want %q, got %q", want, got)
	}
}
