package reliability

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/stratafs/strata/internal/fstree"
	"github.com/stratafs/strata/internal/testutil"
)

const (
	privProbeEnv = "STRATA_RELIAB_PRIV_ROOT"
	nobody       = 65534
)

// privOps are the operations an unprivileged user tries on a mount, in
// order (successful ones change the mount, identically on both). Paths
// refer to privLower.
var privOps = []struct{ op, a, b string }{
	{"read", "secret", ""},              // 0600 root: EACCES
	{"read", "pub", ""},                 // 0644 root: ok
	{"write", "pub", ""},                // EACCES
	{"truncate", "pub", ""},             // EACCES
	{"chmod", "pub", ""},                // EPERM (not the owner)
	{"setxattr", "pub", ""},             // EACCES (no write permission)
	{"readdir", "priv", ""},             // 0700 root dir: EACCES
	{"stat", "priv/f", ""},              // EACCES (no search permission)
	{"read", "priv/f", ""},              // EACCES
	{"create", "priv/new", ""},          // EACCES
	{"readdir", "ro", ""},               // 0755: ok
	{"create", "ro/new", ""},            // EACCES
	{"unlink", "ro/f", ""},              // EACCES
	{"mkdir", "ro/d", ""},               // EACCES
	{"readdir", "open", ""},             // 0777: ok
	{"create", "open/new", ""},          // ok, owned by nobody
	{"write", "open/new", ""},           // ok
	{"read", "open/new", ""},            // ok
	{"rename", "open/new", "open/new2"}, // ok
	{"mkdir", "open/d", ""},             // ok
	{"create", "open/d/x", ""},          // ok
	{"unlink", "open/f", ""},            // ok: root's file in a 0777 dir
	{"write", "open/g", ""},             // 0644 root file: EACCES
	{"unlink", "sticky/f", ""},          // 01777 dir, root's file: EPERM
	{"create", "sticky/mine", ""},       // ok
	{"unlink", "sticky/mine", ""},       // ok: own file
	{"read", "own", ""},                 // 0600 nobody: ok
	{"write", "own", ""},                // ok (copy-up keeps the owner)
	{"chmod", "own", ""},                // ok
	{"read", "grp", ""},                 // 0640 root:nogroup: ok through the group
	{"write", "grp", ""},                // EACCES
	{"stat", "open/new2", ""},           // owner reported below
	{"stat", "own", ""},
	{"rename", "pub", "open/pub"}, // EACCES (/ not writable)
	{"unlink", "secret", ""},      // EACCES
	{"readdir", ".", ""},          // ok
	{"create", "sgid/new", ""},    // ok, group 0 from the set-group-ID dir
	{"stat", "sgid/new", ""},      // uid 65534 gid 0
	{"mkdir", "sgid/d", ""},       // ok, inherits set-group-ID
	{"stat", "sgid/d", ""},        // gid 0, mode 02755
	{"write", "suid", ""},         // ok: clears set-user-ID and set-group-ID
	{"stat", "suid", ""},          // mode 0777
	{"exec", "x", ""},             // 0755: access(X_OK) ok
	{"exec", "pub", ""},           // EACCES
}

// privResult is what the probe reports per op: the errno name and, for
// stat, owner and mode.
type privResult struct {
	Err  string
	Stat string
}

// TestHelperPrivProbe is not a test: run as nobody by TestPrivileges, it
// runs privOps under the root in its environment and prints the results
// as JSON.
func TestHelperPrivProbe(t *testing.T) {
	root := os.Getenv(privProbeEnv)
	if root == "" {
		t.Skip("helper process only")
	}
	var res []privResult
	for _, o := range privOps {
		a, b := filepath.Join(root, o.a), filepath.Join(root, o.b)
		var r privResult
		var err error
		switch o.op {
		case "read":
			_, err = os.ReadFile(a)
		case "write":
			var f *os.File
			if f, err = os.OpenFile(a, os.O_WRONLY|os.O_APPEND, 0); err == nil {
				_, err = f.WriteString("by nobody\n")
				f.Close()
			}
		case "truncate":
			err = os.Truncate(a, 1)
		case "chmod":
			err = os.Chmod(a, 0o666)
		case "setxattr":
			err = unix.Setxattr(a, "user.x", []byte("v"), 0)
		case "readdir":
			_, err = os.ReadDir(a)
		case "stat":
			var st unix.Stat_t
			if err = unix.Lstat(a, &st); err == nil {
				r.Stat = fmt.Sprintf("uid %d gid %d mode %#o", st.Uid, st.Gid, st.Mode)
			}
		case "create":
			err = os.WriteFile(a, []byte("new\n"), 0o644)
		case "mkdir":
			err = os.Mkdir(a, 0o755)
		case "unlink":
			err = os.Remove(a)
		case "rename":
			err = os.Rename(a, b)
		case "exec":
			err = unix.Access(a, unix.X_OK)
		}
		r.Err = "ok"
		if err != nil {
			var en unix.Errno
			if errors.As(err, &en) {
				r.Err = unix.ErrnoName(en)
			} else {
				r.Err = err.Error()
			}
		}
		res = append(res, r)
	}
	json.NewEncoder(os.Stdout).Encode(res)
}

// privLower fills a lower layer with root- and nobody-owned objects.
func privLower(t *testing.T, dir string) {
	t.Helper()
	type ent struct {
		path     string
		dir      bool
		mode     os.FileMode
		uid, gid int
	}
	for _, e := range []ent{
		{"secret", false, 0o600, 0, 0},
		{"pub", false, 0o644, 0, 0},
		{"x", false, 0o755, 0, 0},
		{"priv", true, 0o700, 0, 0},
		{"priv/f", false, 0o644, 0, 0},
		{"ro", true, 0o755, 0, 0},
		{"ro/f", false, 0o644, 0, 0},
		{"open", true, 0o777, 0, 0},
		{"open/f", false, 0o644, 0, 0},
		{"open/g", false, 0o644, 0, 0},
		{"sticky", true, 0o777 | os.ModeSticky, 0, 0},
		{"sticky/f", false, 0o666, 0, 0},
		{"own", false, 0o600, nobody, nobody},
		{"grp", false, 0o640, 0, nobody},
		{"sgid", true, 0o777 | os.ModeSetgid, 0, 0},
		{"suid", false, 0o777 | os.ModeSetuid | os.ModeSetgid, 0, 0},
	} {
		p := filepath.Join(dir, e.path)
		var err error
		if e.dir {
			err = os.Mkdir(p, 0o700)
		} else {
			err = os.WriteFile(p, []byte("lower "+e.path+"\n"), 0o600)
		}
		if err == nil {
			err = os.Chmod(p, e.mode)
		}
		if err == nil {
			err = os.Lchown(p, e.uid, e.gid)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
}

// TestPrivileges runs privOps as nobody on kernel overlayfs and on strata
// FUSE over the same lowers (files owned by root and nobody, modes 0600,
// 0644, dirs 0700, 0755, 0777, 01777) and compares the errno of every op:
// FUSE (allow_other, default_permissions) must refuse exactly what the
// kernel refuses.
func TestPrivileges(t *testing.T) {
	testutil.RequireFUSE(t)
	testutil.RequireOverlay(t)
	base := t.TempDir()
	// t.TempDir makes a 0700 parent and dir: let nobody through.
	for _, d := range []string{filepath.Dir(base), base} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	// The probe is this test binary; copy it where nobody can run it.
	exe := filepath.Join(base, "probe")
	copyExe(t, os.Args[0], exe)

	lower := filepath.Join(base, "lower")
	lower2 := filepath.Join(base, "lower2")
	for _, d := range []string{lower, lower2} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	privLower(t, lower2)
	mk := func(name string) fuseSpec {
		sp := fuseSpec{Lowers: []string{lower, lower2}, Upper: filepath.Join(base, name, "upper"), Work: filepath.Join(base, name, "work"), Target: filepath.Join(base, name, "mnt")}
		for _, d := range []string{filepath.Join(base, name), sp.Upper, sp.Work, sp.Target} {
			if err := os.MkdirAll(d, 0o755); err != nil {
				t.Fatal(err)
			}
		}
		return sp
	}
	ksp, fsp := mk("kernel"), mk("fuse")
	mountKernel(t, ksp)
	mountFUSEChild(t, fsp)

	probe := func(root string) []privResult {
		cmd := exec.Command(exe, "-test.run=^TestHelperPrivProbe$", "-test.count=1")
		cmd.Env = append(os.Environ(), privProbeEnv+"="+root)
		cmd.Dir = "/"
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: nobody, Gid: nobody}}
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("probe as nobody on %s: %v\n%s\n%s", root, err, out, stderr.String())
		}
		var res []privResult
		// The JSON line comes before go test's PASS line.
		if err := json.NewDecoder(bytes.NewReader(out)).Decode(&res); err != nil {
			t.Fatalf("probe output %q: %v", out, err)
		}
		return res
	}
	kr, fr := probe(ksp.Target), probe(fsp.Target)
	denied := 0
	for i, o := range privOps {
		k, f := kr[i], fr[i]
		if k != f {
			t.Errorf("%s %s %s as nobody: kernel %+v, FUSE %+v", o.op, o.a, o.b, k, f)
		}
		if k.Err != "ok" {
			denied++
		}
		t.Logf("%-8s %-10s %-9s kernel %-7s %s", o.op, o.a, o.b, k.Err, k.Stat)
	}
	// After the probes both mounts show the same tree, owners and modes
	// included (copy-up keeps a lower file's owner; new files are
	// nobody's).
	snap := func(root string) fstree.Tree {
		tr, err := fstree.Snapshot(root, fstree.WithoutRoot())
		if err != nil {
			t.Fatal(err)
		}
		for _, n := range tr {
			n.Mtime, n.Atime = time.Time{}, time.Time{}
		}
		return tr
	}
	if d := fstree.Diff(snap(ksp.Target), snap(fsp.Target)); len(d) > 0 {
		t.Errorf("after the probes, FUSE tree differs from kernel (a=kernel, b=fuse):\n  %s", strings.Join(d, "\n  "))
	}
	t.Logf("privileges: %d ops as uid %d, %d refused by the kernel; FUSE differs on %d", len(privOps), nobody, denied, countDiff(kr, fr))
}

func countDiff(a, b []privResult) int {
	n := 0
	for i := range a {
		if a[i] != b[i] {
			n++
		}
	}
	return n
}

func copyExe(t *testing.T, from, to string) {
	t.Helper()
	in, err := os.Open(from)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.OpenFile(to, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
}
