package command

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// result is one in-process run of strata.
type result struct {
	stdout, stderr string
	code           int
}

// run runs strata with args in process, as main does.
func run(t *testing.T, args ...string) result {
	t.Helper()
	var out, errb bytes.Buffer
	code := Main(args, &out, &errb)
	t.Logf("strata %s -> %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), code, clip(out.String()), errb.String())
	return result{out.String(), errb.String(), code}
}

// requireFails checks a one-line "strata: ..." error with the exit code.
func requireFails(t *testing.T, r result, code int, wantStderr string) {
	t.Helper()
	equal(t, code, r.code, "exit status")
	equal(t, wantStderr+"\n", r.stderr)
	equal(t, "", r.stdout, "stdout")
}

// mkfiles creates dir and, for each "path=content", a file (with parents).
func mkfiles(t *testing.T, dir string, files ...string) string {
	t.Helper()
	must(t, os.MkdirAll(dir, 0o755))
	for _, f := range files {
		name, content, _ := strings.Cut(f, "=")
		p := filepath.Join(dir, name)
		must(t, os.MkdirAll(filepath.Dir(p), 0o755))
		must(t, os.WriteFile(p, []byte(content), 0o644))
	}
	return dir
}

// mountedHere reports whether dir is a mount point.
func mountedHere(t *testing.T, dir string) bool {
	t.Helper()
	ok, err := isMountPoint(dir)
	must(t, err)
	return ok
}

// cleanupMount detaches whatever is still mounted on target when t ends.
// Register it before mounting so it runs before t.TempDir's removal.
func cleanupMount(t *testing.T, target string) {
	t.Helper()
	t.Cleanup(func() {
		for {
			err := unix.Unmount(target, unix.MNT_DETACH)
			if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOENT) {
				return
			}
			if err != nil {
				t.Errorf("cleanup: unmount %s: %v", target, err)
				return
			}
		}
	})
}

// Small assertion helpers (the project avoids pulling testify's yaml
// dependency into go.sum for a few checks).

func must(t *testing.T, err error, what ...any) {
	t.Helper()
	if err != nil {
		t.Fatal(append(what, err)...)
	}
}

func equal[T comparable](t *testing.T, want, got T, what ...any) {
	t.Helper()
	if want != got {
		t.Fatalf("%v: want %#v, got %#v", what, want, got)
	}
}

func contains(t *testing.T, s, sub string, what ...any) {
	t.Helper()
	if !strings.Contains(s, sub) {
		t.Fatalf("%v: %q does not contain %q", what, s, sub)
	}
}

// clip shortens s for a log line.
func clip(s string) string {
	if len(s) > 400 {
		return s[:400] + "..."
	}
	return s
}
