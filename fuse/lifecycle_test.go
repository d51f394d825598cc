//go:build linux

package fuse

import (
	"bufio"
	"encoding/json"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/stratafs/strata/internal/testutil"
	"github.com/stratafs/strata/overlay"
)

const helperEnv = "STRATA_FUSE_TEST_SERVE"

// TestHelperServe is not a test: run by TestDeadServerCleared as a child
// process, it serves a mount until killed.
func TestHelperServe(t *testing.T) {
	spec := os.Getenv(helperEnv)
	if spec == "" {
		t.Skip("helper process only")
	}
	var c childSpec
	if err := json.Unmarshal([]byte(spec), &c); err != nil {
		t.Fatal(err)
	}
	var opts []overlay.StackOption
	if c.Upper != "" {
		opts = append(opts, overlay.WithUpper(c.Upper, c.Work))
	}
	s, err := overlay.NewStack(c.Lowers, opts...)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := Mount(s, c.Target, Options{})
	if err != nil {
		t.Fatal(err)
	}
	os.Stdout.WriteString("ready\n")
	srv.Wait()
}

// childSpec tells a child process what to serve.
type childSpec struct {
	Lowers              []string
	Upper, Work, Target string
}

// startChild starts this test binary as a FUSE server for spec and
// returns once the mount is up. The child's stderr goes to stderr.
func startChild(t *testing.T, spec childSpec, stderr io.Writer) *exec.Cmd {
	t.Helper()
	b, err := json.Marshal(spec)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperServe$")
	cmd.Env = append(os.Environ(), helperEnv+"="+string(b))
	cmd.Stderr = stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil || line != "ready\n" {
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatalf("child server: %q, %v", line, err)
	}
	return cmd
}

// TestDeadServerCleared: a killed server leaves an ENOTCONN mount behind;
// ClearStale (and Mount, which calls it) clears it.
func TestDeadServerCleared(t *testing.T) {
	testutil.RequireFUSE(t)
	l := newCrossLayers(t)
	target := t.TempDir()
	t.Cleanup(func() { unix.Unmount(target, unix.MNT_DETACH) })
	cmd := startChild(t, childSpec{Lowers: []string{l.lower}, Upper: l.upper, Work: l.work, Target: target}, nil)
	if _, err := os.Stat(filepath.Join(target, "a")); err != nil {
		t.Errorf("served mount: %v", err)
	}
	cmd.Process.Kill()
	cmd.Wait()

	var st unix.Statfs_t
	if err := unix.Statfs(target, &st); !errors.Is(err, unix.ENOTCONN) {
		t.Fatalf("stat of a dead mount: %v, want ENOTCONN", err)
	}
	s := l.stack(t)
	srv, err := Mount(s, target, Options{})
	if err != nil {
		t.Fatalf("mount over a dead mount: %v", err)
	}
	if b, err := os.ReadFile(filepath.Join(target, "a")); err != nil || string(b) != "A" {
		t.Errorf("read after remount: %q %v", b, err)
	}
	if err := srv.Unmount(); err != nil {
		t.Fatal(err)
	}
	srv.Wait()
	if err := unix.Statfs(target, &st); err != nil {
		t.Errorf("statfs after unmount: %v", err)
	}
}
