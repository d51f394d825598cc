package reliability

import (
	"bufio"
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/stratafs/strata/fuse"
	"github.com/stratafs/strata/overlay"
)

// fuseChildEnv carries a fuseSpec (JSON) to TestHelperFUSEServer.
const fuseChildEnv = "STRATA_RELIAB_FUSE_CHILD"

// fuseSpec is what a child FUSE server serves.
type fuseSpec struct {
	Lowers              []string // topmost first
	Upper, Work, Target string
}

// TestHelperFUSEServer is not a test: run as a child by mountFUSEChild, it
// serves a fuseSpec until unmounted. The server runs in its own process so
// that the test's own file accesses cannot hit go-fuse's same-process
// deadlocks (a GC stopping the world while a thread blocks on a request
// this process must answer).
func TestHelperFUSEServer(t *testing.T) {
	env := os.Getenv(fuseChildEnv)
	if env == "" {
		t.Skip("helper process only")
	}
	var sp fuseSpec
	if err := json.Unmarshal([]byte(env), &sp); err != nil {
		t.Fatal(err)
	}
	s, err := overlay.NewStack(sp.Lowers, overlay.WithUpper(sp.Upper, sp.Work))
	if err != nil {
		t.Fatal(err)
	}
	srv, err := fuse.Mount(s, sp.Target, fuse.Options{})
	if err != nil {
		t.Fatal(err)
	}
	os.Stdout.WriteString("ready\n")
	srv.Wait()
}

// mountFUSEChild serves sp from a child process (this test binary) and
// returns once the mount is up. The returned func unmounts and waits for
// the child (idempotent); it also runs at cleanup. A child that reports a
// data race (it is built with -race when the test is) fails t.
func mountFUSEChild(t *testing.T, sp fuseSpec) (unmount func()) {
	t.Helper()
	b, err := json.Marshal(sp)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperFUSEServer$", "-test.count=1")
	cmd.Env = append(os.Environ(), fuseChildEnv+"="+string(b))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
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
		t.Fatalf("child FUSE server: %q, %v\n%s", line, err, stderr.String())
	}
	done := false
	unmount = func() {
		if done {
			return
		}
		done = true
		if err := unix.Unmount(sp.Target, 0); err != nil {
			t.Errorf("unmount FUSE %s: %v; detaching", sp.Target, err)
			unix.Unmount(sp.Target, unix.MNT_DETACH)
			cmd.Process.Kill()
		}
		err := cmd.Wait()
		if err != nil || strings.Contains(stderr.String(), "DATA RACE") {
			t.Errorf("child FUSE server: %v\n%s", err, stderr.String())
		}
	}
	t.Cleanup(unmount)
	return unmount
}

// mountKernel mounts lowers+upper with kernel overlayfs and strata's
// format options; the returned func unmounts (idempotent, also at cleanup).
func mountKernel(t *testing.T, sp fuseSpec) (unmount func()) {
	t.Helper()
	s, err := overlay.NewStack(sp.Lowers, overlay.WithUpper(sp.Upper, sp.Work))
	if err != nil {
		t.Fatal(err)
	}
	if err := overlay.Mount(s, sp.Target, overlay.MountOptions{}); err != nil {
		t.Fatal(err)
	}
	done := false
	unmount = func() {
		if done {
			return
		}
		done = true
		if err := overlay.Unmount(sp.Target); err != nil {
			t.Errorf("unmount overlay %s: %v", sp.Target, err)
		}
	}
	t.Cleanup(unmount)
	return unmount
}

// layerDirs makes n lower dirs plus upper, work and target under a fresh
// temp dir, returning the spec (lowers topmost first, i.e. lower n-1 is
// the bottom). The temp dir is made 0755 so unprivileged users can
// traverse it.
func layerDirs(t *testing.T, base string, n int) fuseSpec {
	t.Helper()
	if base == "" {
		base = t.TempDir()
	}
	if err := os.Chmod(base, 0o755); err != nil {
		t.Fatal(err)
	}
	sp := fuseSpec{Upper: filepath.Join(base, "upper"), Work: filepath.Join(base, "work"), Target: filepath.Join(base, "mnt")}
	for i := 0; i < n; i++ {
		sp.Lowers = append(sp.Lowers, filepath.Join(base, "l"+string(rune('0'+i))))
	}
	for _, d := range append([]string{sp.Upper, sp.Work, sp.Target}, sp.Lowers...) {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return sp
}
