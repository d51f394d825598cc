//go:build linux

package fuse

import (
	"encoding/binary"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/stratafs/strata/internal/testutil"
)

// aclEntry is one entry of a POSIX ACL in its xattr form.
type aclEntry struct {
	tag, perm uint16
	id        uint32
}

const (
	aclUserObj  = 0x01
	aclUser     = 0x02
	aclGroupObj = 0x04
	aclMask     = 0x10
	aclOther    = 0x20
	aclNoID     = 0xffffffff
)

// aclXattr encodes entries (in canonical order) as the value of
// system.posix_acl_access or system.posix_acl_default.
func aclXattr(entries ...aclEntry) []byte {
	b := binary.LittleEndian.AppendUint32(nil, 2) // POSIX_ACL_XATTR_VERSION
	for _, e := range entries {
		b = binary.LittleEndian.AppendUint16(b, e.tag)
		b = binary.LittleEndian.AppendUint16(b, e.perm)
		b = binary.LittleEndian.AppendUint32(b, e.id)
	}
	return b
}

// TestACLAsKernel: POSIX ACLs of lower files and dirs grant and deny
// access to an unprivileged user on FUSE exactly as on kernel overlayfs
// (the kernel enforces them: FUSE_POSIX_ACL), including ACLs inherited
// from a default ACL by a file created through the mount.
func TestACLAsKernel(t *testing.T) {
	testutil.RequireFUSE(t)
	testutil.RequireOverlay(t)
	setpriv, err := exec.LookPath("setpriv")
	if err != nil {
		t.Skip("needs setpriv to act as an unprivileged user")
	}
	const uid = 1000
	// user 1000 named with no permissions, although "other" may read
	deny := aclXattr(aclEntry{aclUserObj, 6, aclNoID}, aclEntry{aclUser, 0, uid},
		aclEntry{aclGroupObj, 4, aclNoID}, aclEntry{aclMask, 4, aclNoID}, aclEntry{aclOther, 4, aclNoID})
	// user 1000 may read, although "other" may not
	allow := aclXattr(aclEntry{aclUserObj, 6, aclNoID}, aclEntry{aclUser, 4, uid},
		aclEntry{aclGroupObj, 0, aclNoID}, aclEntry{aclMask, 4, aclNoID}, aclEntry{aclOther, 0, aclNoID})
	// new files in dacl/ let user 1000 write
	dflt := aclXattr(aclEntry{aclUserObj, 7, aclNoID}, aclEntry{aclUser, 7, uid},
		aclEntry{aclGroupObj, 5, aclNoID}, aclEntry{aclMask, 7, aclNoID}, aclEntry{aclOther, 5, aclNoID})
	ops := []struct{ name, cmd string }{
		{"read denied by a named user entry", "cat acl-deny"},
		{"read allowed by a named user entry", "cat acl-allow"},
		{"write to a file created as root in a dir with a default ACL", "echo x >> dacl/new"},
		{"read a lower file with an ACL after chmod", "cat acl-chmod"},
	}
	results := map[string][]bool{}
	for _, be := range []string{"kernel", "fuse"} {
		l := newCrossLayers(t)
		for name, v := range map[string][]byte{"acl-deny": deny, "acl-allow": allow, "acl-chmod": allow} {
			p := filepath.Join(l.lower, name)
			if err := os.WriteFile(p, []byte("secret\n"), 0o644); err != nil {
				t.Fatal(err)
			}
			if err := unix.Setxattr(p, "system.posix_acl_access", v, 0); err != nil {
				t.Skipf("the test fs has no POSIX ACLs: %v", err)
			}
		}
		d := filepath.Join(l.lower, "dacl")
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := unix.Setxattr(d, "system.posix_acl_default", dflt, 0); err != nil {
			t.Fatal(err)
		}
		root := mountOn(t, be, l)
		if err := os.Chmod(filepath.Dir(root), 0o755); err != nil {
			t.Fatal(err)
		}
		// as root, through the mount: a new file inherits dacl's default
		// ACL; a chmod of a lower file with an ACL rewrites its mask
		if err := os.WriteFile(filepath.Join(root, "dacl", "new"), []byte("n\n"), 0o664); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(filepath.Join(root, "acl-chmod"), 0o600); err != nil {
			t.Fatal(err)
		}
		for _, op := range ops {
			c := exec.Command(setpriv, "--reuid=1000", "--regid=1000", "--clear-groups", "sh", "-c", "cd "+root+" && "+op.cmd)
			out, err := c.CombinedOutput()
			results[be] = append(results[be], err == nil)
			t.Logf("%s: %s: err=%v %s", be, op.cmd, err, out)
		}
	}
	for i, op := range ops {
		if results["fuse"][i] != results["kernel"][i] {
			t.Errorf("%s (%s): allowed on FUSE %v, on kernel overlayfs %v", op.name, op.cmd, results["fuse"][i], results["kernel"][i])
		}
	}
}

// TestUmaskAsKernel: files, dirs and fifos created through the mount get
// the mode the caller asked for under the caller's umask, whatever the
// server's own umask, on FUSE exactly as on kernel overlayfs.
func TestUmaskAsKernel(t *testing.T) {
	testutil.RequireFUSE(t)
	testutil.RequireOverlay(t)
	modes := map[string]string{}
	for _, be := range []string{"kernel", "fuse"} {
		l := newCrossLayers(t)
		root := mountOn(t, be, l)
		for _, um := range []string{"000", "027"} {
			script := "umask " + um + " && cd " + root + " && touch f" + um + " && mkdir d" + um + " && mkfifo p" + um +
				" && stat -c '%a %n' f" + um + " d" + um + " p" + um
			out, err := exec.Command("sh", "-c", script).CombinedOutput()
			if err != nil {
				t.Fatalf("%s: %s: %v %s", be, script, err, out)
			}
			modes[be] += string(out)
		}
	}
	if modes["fuse"] != modes["kernel"] {
		t.Errorf("modes on FUSE:\n%s\non kernel overlayfs:\n%s", modes["fuse"], modes["kernel"])
	}
}
