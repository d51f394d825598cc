package command

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/stratafs/strata/internal/testutil"
)

// asStrataEnv makes the test binary act as the strata command: the FUSE
// backend re-executes os.Executable() (this binary in tests) to run its
// detached server. TestMain sets it for its children.
const asStrataEnv = "STRATA_TEST_AS_STRATA"

func TestMain(m *testing.M) {
	if filepath.Base(os.Args[0]) == FuseOverlayfsName { // as cmd/strata's main
		os.Exit(FuseOverlayfsMain(os.Args[1:], os.Stdout, os.Stderr))
	}
	if os.Getenv(asStrataEnv) == "1" {
		os.Exit(Main(os.Args[1:], os.Stdout, os.Stderr))
	}
	os.Setenv(asStrataEnv, "1")
	logs, err := os.MkdirTemp("", "strata-logs-")
	if err != nil {
		panic(err)
	}
	os.Setenv(LogDirEnv, logs) // not /run/strata
	code := m.Run()
	os.RemoveAll(logs)
	os.Exit(code)
}

// serverPid returns the pid of the FUSE server that logs to logFile.
func serverPid(t *testing.T, logFile string) int {
	t.Helper()
	m := regexp.MustCompile(`strata-fuse\[(\d+)\]`).FindStringSubmatch(readFile(t, logFile))
	if m == nil {
		t.Fatalf("no server pid in %s", logFile)
	}
	pid, err := strconv.Atoi(m[1])
	must(t, err)
	return pid
}

// waitGone waits until process pid has exited (the server exits once its
// mount is gone; this is an ordering wait, not a timing assertion).
func waitGone(t *testing.T, pid int) {
	t.Helper()
	for i := 0; i < 1000; i++ {
		if err := unix.Kill(pid, 0); errors.Is(err, unix.ESRCH) {
			return
		}
		// a zombie child of this process still answers kill(0): check its state
		if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid)); err != nil || strings.Contains(string(b), ") Z ") {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("server %d still running 10s after its mount went", pid)
}

func TestMountFUSE_DetachedUnionAndUmount(t *testing.T) {
	testutil.RequireFUSE(t)
	base, lowerdir := layers(t)
	mnt := filepath.Join(base, "mnt")
	logFile := filepath.Join(base, "server.log")
	cleanupMount(t, mnt)

	r := run(t, "--backend", "fuse", "--format", "json", "mount", "--log", logFile, "-o", "lowerdir="+lowerdir, "-o",
		"upperdir="+filepath.Join(base, "upper")+",workdir="+filepath.Join(base, "work"), mnt)
	equal(t, ExitOK, r.code, r.stderr)
	var rep mountReport
	must(t, json.Unmarshal([]byte(r.stdout), &rep))
	equal(t, "fuse", rep.Backend)
	// the mount is live when mount returns
	var st unix.Statfs_t
	must(t, unix.Statfs(mnt, &st))
	equal(t, int64(fuseMagic), int64(st.Type), "statfs type")
	equal(t, "2", readFile(t, filepath.Join(mnt, "a")), "a from l2")
	equal(t, "[a b d]", fmt.Sprint(names(t, mnt)), "root")
	equal(t, "[y]", fmt.Sprint(names(t, filepath.Join(mnt, "d"))), "opaque d")
	must(t, os.WriteFile(filepath.Join(mnt, "a"), []byte("new"), 0o644))
	equal(t, "new", readFile(t, filepath.Join(base, "upper", "a")), "copied up")
	mi, err := os.ReadFile("/proc/self/mountinfo")
	must(t, err)
	for _, line := range strings.Split(string(mi), "\n") {
		if strings.Contains(line, " "+mnt+" ") {
			contains(t, line, "allow_other", "mountinfo")
			contains(t, line, "default_permissions", "mountinfo")
		}
	}

	pid := serverPid(t, logFile)
	r = run(t, "umount", mnt)
	equal(t, ExitOK, r.code, r.stderr)
	if mountedHere(t, mnt) {
		t.Fatal("still mounted")
	}
	waitGone(t, pid)
	contains(t, readFile(t, logFile), "unmounted; exiting", "log")
}

func TestMountFUSE_UmountClearsDeadMount(t *testing.T) {
	testutil.RequireFUSE(t)
	base, lowerdir := layers(t)
	mnt := filepath.Join(base, "mnt")
	logFile := filepath.Join(base, "server.log")
	cleanupMount(t, mnt)
	args := []string{"--backend", "fuse", "mount", "--log", logFile, "-o", "lowerdir=" + lowerdir, mnt}

	equal(t, ExitOK, run(t, args...).code)
	pid := serverPid(t, logFile)
	must(t, unix.Kill(pid, unix.SIGKILL))
	waitGone(t, pid)
	// statfs always reaches the (gone) server, and is what umount and
	// mount use to tell a dead mount (a listing once failed EIO here
	// under load, from the kernel's side of the aborted connection)
	var st unix.Statfs_t
	if err := unix.Statfs(mnt, &st); !errors.Is(err, unix.ENOTCONN) && !errors.Is(err, unix.ECONNABORTED) {
		t.Fatalf("dead mount: statfs: want ENOTCONN or ECONNABORTED, got %v", err)
	}
	if _, err := os.ReadDir(mnt); err == nil {
		t.Fatal("dead mount: listing succeeded")
	}
	r := run(t, "umount", mnt)
	equal(t, ExitOK, r.code, r.stderr)
	if mountedHere(t, mnt) {
		t.Fatal("dead mount still there")
	}
	// and the next mount works
	must(t, os.Remove(logFile))
	equal(t, ExitOK, run(t, args...).code)
	equal(t, "3", readFile(t, filepath.Join(mnt, "b")))
	equal(t, ExitOK, run(t, "umount", mnt).code)
	waitGone(t, serverPid(t, logFile))
}

// startServer runs the test binary as a foreground FUSE server with a
// readiness pipe, as the detached mount does, and returns what it
// reported; stderr() reads its stderr so far.
func startServer(t *testing.T, args ...string) (cmd *exec.Cmd, report string, stderr func() string) {
	t.Helper()
	pr, pw, err := os.Pipe()
	must(t, err)
	defer pr.Close()
	cmd = exec.Command(os.Args[0], args...)
	cmd.Env = append(os.Environ(), readyFDEnv+"=3")
	cmd.ExtraFiles = []*os.File{pw}
	errFile := filepath.Join(t.TempDir(), "stderr")
	f, err := os.Create(errFile)
	must(t, err)
	defer f.Close()
	cmd.Stderr = f
	stderr = func() string { b, _ := os.ReadFile(errFile); return string(b) }
	must(t, cmd.Start())
	pw.Close()
	msg, _ := io.ReadAll(pr)
	return cmd, string(msg), stderr
}

func TestMountFUSE_ServerErrorReported(t *testing.T) {
	testutil.RequireFUSE(t)
	base, _ := layers(t)
	file := filepath.Join(base, "file")
	must(t, os.WriteFile(file, nil, 0o644))
	cmd, report, stderr := startServer(t, "--backend", "fuse", "mount", "-f", "-o", "lowerdir="+filepath.Join(base, "l1"), file)
	if err := cmd.Wait(); err == nil {
		t.Fatal("server on a file target exited 0")
	}
	contains(t, report, "not a directory", "report; stderr: "+stderr())
}

func TestMountFUSE_ForegroundSIGTERM(t *testing.T) {
	testutil.RequireFUSE(t)
	base, lowerdir := layers(t)
	mnt := filepath.Join(base, "mnt")
	cleanupMount(t, mnt)
	cmd, report, stderr := startServer(t, "--backend", "fuse", "mount", "-f", "-o", "lowerdir="+lowerdir+",upperdir="+filepath.Join(base, "upper")+",workdir="+filepath.Join(base, "work"), mnt)
	equal(t, "ok\n", report, "readiness; stderr: "+stderr())
	equal(t, "2", readFile(t, filepath.Join(mnt, "d", "y")))
	must(t, cmd.Process.Signal(syscall.SIGTERM))
	must(t, cmd.Wait(), "server exit; stderr: "+stderr())
	if mountedHere(t, mnt) {
		t.Fatal("still mounted after SIGTERM")
	}
	contains(t, stderr(), "terminated: unmounting")
}

func TestMountAuto_501LayersUsesFUSE(t *testing.T) {
	testutil.RequireOverlay(t)
	testutil.RequireFUSE(t)
	base := t.TempDir()
	const n = 501
	var lowers []string
	for i := n - 1; i >= 0; i-- { // topmost first: l500 ... l0
		d := filepath.Join(base, "l", strconv.Itoa(i))
		mkfiles(t, d, fmt.Sprintf("f%d=%d", i, i), fmt.Sprintf("top=%d", i))
		lowers = append(lowers, d)
	}
	for _, d := range []string{"upper", "work", "mnt"} {
		must(t, os.Mkdir(filepath.Join(base, d), 0o755))
	}
	mnt := filepath.Join(base, "mnt")
	cleanupMount(t, mnt)
	r := run(t, "--format", "json", "mount", "--log", filepath.Join(base, "log"), "-o",
		"lowerdir="+strings.Join(lowers, ":")+",upperdir="+filepath.Join(base, "upper")+",workdir="+filepath.Join(base, "work"), mnt)
	equal(t, ExitOK, r.code, r.stderr)
	var rep mountReport
	must(t, json.Unmarshal([]byte(r.stdout), &rep))
	equal(t, "fuse", rep.Backend, "auto with 501 layers")
	equal(t, n, len(rep.Lowers))
	equal(t, strconv.Itoa(n-1), readFile(t, filepath.Join(mnt, "top")), "topmost wins")
	equal(t, "0", readFile(t, filepath.Join(mnt, "f0")), "bottom layer visible")
	equal(t, n+1, len(names(t, mnt)), "f0..f500 and top")
	must(t, os.WriteFile(filepath.Join(mnt, "f0"), []byte("w"), 0o644))
	equal(t, "w", readFile(t, filepath.Join(base, "upper", "f0")))
	equal(t, ExitOK, run(t, "umount", mnt).code)
	waitGone(t, serverPid(t, filepath.Join(base, "log")))
}
