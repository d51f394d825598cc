package command

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/stratafs/strata/internal/testutil"
)

func TestFuseOverlayfsArgs(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   []string
		want []string
		err  string
	}{
		{name: "containers/storage form", in: []string{"-o", "lowerdir=l/a:l/b,upperdir=u,workdir=w,fsync=0", "/m"},
			want: []string{"--backend", "fuse", "mount", "-o", "lowerdir=l/a:l/b,upperdir=u,workdir=w,fsync=0", "--", "/m"}},
		{name: "joined -o, foreground, kernel flags", in: []string{"-f", "-olowerdir=a,nodev,allow_other", "-o", "ro,nosuid,default_permissions", "m"},
			want: []string{"--backend", "fuse", "mount", "--foreground", "--vfs-flags", "nodev,nosuid", "-o", "lowerdir=a,ro", "--", "m"}},
		{name: "version", in: []string{"--version"}, want: []string{"--version"}},
		{name: "debug", in: []string{"--debug", "-o", "lowerdir=a,volatile", "m"},
			want: []string{"--backend", "fuse", "--debug", "mount", "--foreground", "-o", "lowerdir=a,volatile", "--", "m"}},
		{name: "uidmapping", in: []string{"-o", "lowerdir=a,uidmapping=0:1000:1", "m"},
			err: `option "uidmapping": id mapping and squashing are not implemented by strata; use an idmapped mount or a user namespace instead`},
		{name: "squash_to_root", in: []string{"-o", "squash_to_root,lowerdir=a", "m"},
			err: `option "squash_to_root": id mapping and squashing are not implemented by strata; use an idmapped mount or a user namespace instead`},
		{name: "unknown", in: []string{"-o", "lowerdir=a,plugins=x", "m"}, err: `option "plugins" is not implemented by strata (see fuse-strata --help)`},
		{name: "no target", in: []string{"-o", "lowerdir=a"}, err: "no MOUNTPOINT (see fuse-strata --help)"},
		{name: "two targets", in: []string{"-o", "lowerdir=a", "m", "n"}, err: `want one MOUNTPOINT, got "m" and "n"`},
		{name: "bad flag", in: []string{"-x", "m"}, err: `unknown flag "-x" (see fuse-strata --help)`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := fuseOverlayfsArgs(tc.in)
			if tc.err != "" {
				if err == nil || err.Error() != tc.err || !errors.Is(err, ErrUsage) {
					t.Fatalf("want usage error %q, got %v", tc.err, err)
				}
				return
			}
			must(t, err)
			if !reflect.DeepEqual(tc.want, got) {
				t.Fatalf("want %q, got %q", tc.want, got)
			}
		})
	}
}

func TestFuseOverlayfs_InProcessRelativeLowers(t *testing.T) {
	testutil.RequireFUSE(t)
	base, _ := layers(t)
	mnt := filepath.Join(base, "mnt")
	cleanupMount(t, mnt)
	t.Chdir(base)
	var out, errb bytes.Buffer
	code := FuseOverlayfsMain([]string{"-o", "lowerdir=l3:l2:l1,upperdir=upper,workdir=work,fsync=0,nodev,nosuid", "mnt"}, &out, &errb)
	equal(t, ExitOK, code, errb.String())
	equal(t, "2", readFile(t, filepath.Join(mnt, "a")))
	must(t, os.WriteFile(filepath.Join(mnt, "new"), []byte("n"), 0o644))
	equal(t, "n", readFile(t, filepath.Join(base, "upper", "new")))
	var st unix.Statfs_t
	must(t, unix.Statfs(mnt, &st))
	equal(t, int64(fuseMagic), int64(st.Type), "statfs type")
	if st.Flags&unix.ST_NODEV == 0 || st.Flags&unix.ST_NOSUID == 0 {
		t.Fatalf("nodev,nosuid not set: statfs flags %#x", st.Flags)
	}
	equal(t, ExitOK, run(t, "umount", mnt).code)

	// refused options mount nothing
	errb.Reset()
	code = FuseOverlayfsMain([]string{"-o", "lowerdir=l3,uidmapping=0:1000:1", "mnt"}, &out, &errb)
	equal(t, ExitUsage, code)
	contains(t, errb.String(), `fuse-strata: option "uidmapping"`)
	if mountedHere(t, mnt) {
		t.Fatal("mounted despite a refused option")
	}
}

// TestFuseOverlayfs_Symlink runs strata the way containers/storage runs
// its mount_program: exec of a symlink named fuse-strata, relative
// lowerdirs against the working dir, detached server.
func TestFuseOverlayfs_Symlink(t *testing.T) {
	testutil.RequireFUSE(t)
	base, _ := layers(t)
	mnt := filepath.Join(base, "mnt")
	cleanupMount(t, mnt)
	exe, err := os.Executable()
	must(t, err)
	link := filepath.Join(t.TempDir(), FuseOverlayfsName)
	must(t, os.Symlink(exe, link))

	cmd := exec.Command(link, "-o", "lowerdir=l3:l2:l1,upperdir=upper,workdir=work,ro", mnt)
	cmd.Dir = base
	out, err := cmd.CombinedOutput()
	must(t, err, string(out))
	equal(t, "3", readFile(t, filepath.Join(mnt, "b")))
	equal(t, "a b d", strings.Join(names(t, mnt), " "), "root")
	if err := os.WriteFile(filepath.Join(mnt, "x"), nil, 0o644); !errors.Is(err, syscall.EROFS) {
		t.Fatalf("ro: want EROFS, got %v", err)
	}

	cmd = exec.Command(link, "-o", "lowerdir=l1,squash_to_root", mnt)
	cmd.Dir = base
	out, err = cmd.CombinedOutput()
	if err == nil {
		t.Fatal("squash_to_root accepted")
	}
	contains(t, string(out), `fuse-strata: option "squash_to_root"`)
	equal(t, ExitOK, run(t, "umount", mnt).code)
}
