package command

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/stratafs/strata/internal/testutil"
	"github.com/stratafs/strata/overlay"
)

func TestParseMountOptions(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   []string
		want mountSpec
		err  string // "" for success
	}{
		{name: "full", in: []string{"lowerdir=a:b,upperdir=u,workdir=w"},
			want: mountSpec{lowers: []string{"a", "b"}, upper: "u", work: "w"}},
		{name: "repeated -o", in: []string{"lowerdir=a", "upperdir=u", "workdir=w,volatile"},
			want: mountSpec{lowers: []string{"a"}, upper: "u", work: "w", volatile: true}},
		{name: "ro then rw", in: []string{"lowerdir=a,ro", "rw"}, want: mountSpec{lowers: []string{"a"}}},
		{name: "fsync=0", in: []string{"lowerdir=a,upperdir=u,workdir=w,fsync=0"},
			want: mountSpec{lowers: []string{"a"}, upper: "u", work: "w", volatile: true}},
		{name: "escaped colon", in: []string{`lowerdir=a\:1:b`}, want: mountSpec{lowers: []string{"a:1", "b"}}},
		{name: "userxattr xino", in: []string{"lowerdir=a,userxattr,xino=off"},
			want: mountSpec{lowers: []string{"a"}, userXattr: true, extra: []string{"xino=off"}}},
		{name: "empty items", in: []string{",lowerdir=a,,ro,"}, want: mountSpec{lowers: []string{"a"}, readOnly: true}},
		{name: "unknown", in: []string{"lowerdir=a,nosuid"}, err: `unknown option "nosuid" (known: lowerdir, upperdir, workdir, ro, rw, volatile, fsync, userxattr, xino)`},
		{name: "no lowerdir", in: []string{"upperdir=u,workdir=w"}, err: "no lowerdir: want -o lowerdir=DIR[:DIR...]"},
		{name: "no options", in: nil, err: "no lowerdir: want -o lowerdir=DIR[:DIR...]"},
		{name: "twice", in: []string{"lowerdir=a", "lowerdir=b"}, err: `option "lowerdir" given twice`},
		{name: "empty layer", in: []string{"lowerdir=a::b"}, err: `lowerdir "a::b": empty layer name`},
		{name: "empty value", in: []string{"lowerdir="}, err: `option "lowerdir" needs a value (lowerdir=...)`},
		{name: "value on flag", in: []string{"lowerdir=a,ro=1"}, err: `option "ro" takes no value`},
		{name: "work alone", in: []string{"lowerdir=a,workdir=w"}, err: "workdir without upperdir"},
		{name: "upper alone", in: []string{"lowerdir=a,upperdir=u"}, err: "upperdir without workdir"},
		{name: "volatile ro", in: []string{"lowerdir=a,volatile"}, err: "volatile needs an upperdir"},
		{name: "bad xino", in: []string{"lowerdir=a,xino=maybe"}, err: `option xino="maybe": want on, off or auto`},
		{name: "bad fsync", in: []string{"lowerdir=a,fsync=2"}, err: `option fsync="2": want 0 or 1`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseMountOptions(tc.in)
			if tc.err != "" {
				if err == nil || err.Error() != tc.err || !errors.Is(err, ErrUsage) {
					t.Fatalf("want usage error %q, got %v", tc.err, err)
				}
				return
			}
			must(t, err)
			if !reflect.DeepEqual(tc.want, got) {
				t.Fatalf("want %+v, got %+v", tc.want, got)
			}
		})
	}
}

// layers builds three lower layers, an upper and a work dir under a
// temp dir, in kernel overlayfs format:
//
//	l1 (bottom): a=1, gone=1, d/x=1
//	l2:          a=2, d/ opaque with d/y=2
//	l3 (top):    whiteout "gone", b=3
func layers(t *testing.T) (base string, lowerdir string) {
	t.Helper()
	base = t.TempDir()
	mkfiles(t, filepath.Join(base, "l1"), "a=1", "gone=1", "d/x=1")
	mkfiles(t, filepath.Join(base, "l2"), "a=2", "d/y=2")
	must(t, overlay.Format{}.SetOpaque(filepath.Join(base, "l2", "d")))
	mkfiles(t, filepath.Join(base, "l3"), "b=3")
	must(t, overlay.MakeWhiteout(filepath.Join(base, "l3"), "gone"))
	for _, d := range []string{"upper", "work", "mnt"} {
		must(t, os.Mkdir(filepath.Join(base, d), 0o755))
	}
	return base, filepath.Join(base, "l3") + ":" + filepath.Join(base, "l2") + ":" + filepath.Join(base, "l1")
}

func readFile(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	must(t, err)
	return string(b)
}

func names(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	must(t, err)
	var n []string
	for _, e := range ents {
		n = append(n, e.Name())
	}
	return n
}

func TestMount_Union(t *testing.T) {
	testutil.RequireOverlay(t)
	base, lowerdir := layers(t)
	mnt := filepath.Join(base, "mnt")
	cleanupMount(t, mnt)

	r := run(t, "mount", "-o", "lowerdir="+lowerdir, "-o",
		"upperdir="+filepath.Join(base, "upper")+",workdir="+filepath.Join(base, "work"), mnt)
	equal(t, ExitOK, r.code, r.stderr)
	equal(t, "", r.stdout+r.stderr, "output")
	if !mountedHere(t, mnt) {
		t.Fatal("not mounted")
	}

	equal(t, "2", readFile(t, filepath.Join(mnt, "a")), "a from l2")
	equal(t, "3", readFile(t, filepath.Join(mnt, "b")), "b from l3")
	equal(t, "[a b d]", fmt.Sprint(names(t, mnt)), "root")
	equal(t, "[y]", fmt.Sprint(names(t, filepath.Join(mnt, "d"))), "opaque d")

	// A write copies up; a delete of a lower file leaves a whiteout.
	must(t, os.WriteFile(filepath.Join(mnt, "a"), []byte("new"), 0o644))
	must(t, os.Remove(filepath.Join(mnt, "b")))
	equal(t, "new", readFile(t, filepath.Join(base, "upper", "a")), "copied up")
	equal(t, "2", readFile(t, filepath.Join(base, "l2", "a")), "lower untouched")
	var st unix.Stat_t
	must(t, unix.Lstat(filepath.Join(base, "upper", "b"), &st))
	if !overlay.IsWhiteoutStat(&st) {
		t.Fatalf("upper/b is not a whiteout: mode %o rdev %d", st.Mode, st.Rdev)
	}

	r = run(t, "umount", mnt)
	equal(t, ExitOK, r.code, r.stderr)
	if mountedHere(t, mnt) {
		t.Fatal("still mounted")
	}
}

func TestMount_ReadOnlyWithoutUpper(t *testing.T) {
	testutil.RequireOverlay(t)
	base, lowerdir := layers(t)
	mnt := filepath.Join(base, "mnt")
	cleanupMount(t, mnt)

	r := run(t, "--format", "json", "mount", "-o", "lowerdir="+lowerdir, mnt)
	equal(t, ExitOK, r.code, r.stderr)
	var rep mountReport
	must(t, json.Unmarshal([]byte(r.stdout), &rep))
	equal(t, true, rep.ReadOnly, "readonly")
	equal(t, "kernel", rep.Backend)
	equal(t, 3, len(rep.Lowers))

	err := os.WriteFile(filepath.Join(mnt, "new"), nil, 0o644)
	if !errors.Is(err, syscall.EROFS) {
		t.Fatalf("write to read-only mount: want EROFS, got %v", err)
	}
	equal(t, ExitOK, run(t, "umount", mnt).code)
}

func TestMount_ReadOnlyOption(t *testing.T) {
	testutil.RequireOverlay(t)
	base, lowerdir := layers(t)
	mnt := filepath.Join(base, "mnt")
	cleanupMount(t, mnt)

	r := run(t, "mount", "-o", "lowerdir="+lowerdir+",upperdir="+filepath.Join(base, "upper")+",workdir="+filepath.Join(base, "work")+",ro", mnt)
	equal(t, ExitOK, r.code, r.stderr)
	if err := os.WriteFile(filepath.Join(mnt, "new"), nil, 0o644); !errors.Is(err, syscall.EROFS) {
		t.Fatalf("want EROFS, got %v", err)
	}
}

func TestMount_RelativePaths(t *testing.T) {
	testutil.RequireOverlay(t)
	base, _ := layers(t)
	mnt := filepath.Join(base, "mnt")
	cleanupMount(t, mnt)
	t.Chdir(base)

	r := run(t, "mount", "-o", "lowerdir=l3:l2:l1,upperdir=upper,workdir=./work", "mnt")
	equal(t, ExitOK, r.code, r.stderr)
	equal(t, "2", readFile(t, filepath.Join(mnt, "a")))
	equal(t, ExitOK, run(t, "umount", "mnt").code)
}

func TestMount_SingleLower(t *testing.T) {
	// Kernel overlayfs refuses one lower layer without an upper one;
	// overlay.Mount then makes a read-only bind mount of the layer.
	testutil.RequireOverlay(t)
	base, _ := layers(t)
	mnt := filepath.Join(base, "mnt")
	cleanupMount(t, mnt)
	r := run(t, "mount", "-o", "lowerdir="+filepath.Join(base, "l1"), mnt)
	if r.code == ExitUsage && strings.Contains(r.stderr, "invalid argument") {
		t.Skip("this overlay.Mount passes a single lower layer to the kernel, which refuses it")
	}
	equal(t, ExitOK, r.code, r.stderr)
	equal(t, "1", readFile(t, filepath.Join(mnt, "a")))
	if err := os.WriteFile(filepath.Join(mnt, "new"), nil, 0o644); !errors.Is(err, syscall.EROFS) {
		t.Fatalf("want EROFS, got %v", err)
	}
	equal(t, ExitOK, run(t, "umount", mnt).code)
	if mountedHere(t, mnt) {
		t.Fatal("still mounted")
	}
}

func TestMount_Errors(t *testing.T) {
	testutil.RequireRoot(t) // layers() makes whiteouts and opaque dirs
	base, lowerdir := layers(t)
	mnt := filepath.Join(base, "mnt")
	file := filepath.Join(base, "l1", "a")
	up := ",upperdir=" + filepath.Join(base, "upper") + ",workdir=" + filepath.Join(base, "work")
	for _, tc := range []struct {
		name string
		args []string
		code int
		msg  string
	}{
		{"missing lowerdir", []string{"-o", "lowerdir=/nonexistent/x", mnt}, ExitNotFound,
			`strata: mount: lowerdir "/nonexistent/x": no such file or directory`},
		{"lowerdir is a file", []string{"-o", "lowerdir=" + file, mnt}, ExitUsage,
			`strata: mount: lowerdir "` + file + `": not a directory`},
		{"missing upperdir", []string{"-o", "lowerdir=" + lowerdir + ",upperdir=/nonexistent/u,workdir=" + filepath.Join(base, "work"), mnt}, ExitNotFound,
			`strata: mount: upperdir "/nonexistent/u": no such file or directory`},
		{"same upper and work", []string{"-o", "lowerdir=" + lowerdir + ",upperdir=" + filepath.Join(base, "upper") + ",workdir=" + filepath.Join(base, "upper"), mnt}, ExitUsage,
			`strata: mount: upperdir and workdir are the same directory "` + filepath.Join(base, "upper") + `"`},
		{"missing target", []string{"-o", "lowerdir=" + lowerdir + up, "/nonexistent/mnt"}, ExitNotFound,
			`strata: mount: target "/nonexistent/mnt": no such file or directory`},
		{"target is a file", []string{"-o", "lowerdir=" + lowerdir + up, file}, ExitUsage,
			`strata: mount: target "` + file + `": not a directory`},
		{"unknown option", []string{"-o", "lowerdir=" + lowerdir + ",nodev", mnt}, ExitUsage,
			`strata: mount: unknown option "nodev" (known: lowerdir, upperdir, workdir, ro, rw, volatile, fsync, userxattr, xino)`},
		{"no target", []string{"-o", "lowerdir=" + lowerdir}, ExitUsage,
			"strata: mount: want 1 argument(s) (TARGET), got 0; see 'strata mount --help'"},
		{"fuse backend, missing lowerdir", []string{"--backend", "fuse", "-o", "lowerdir=/nonexistent/x" + up, mnt}, ExitNotFound,
			`strata: mount: lowerdir "/nonexistent/x": no such file or directory`},
		{"bad backend", []string{"--backend", "zfs", "-o", "lowerdir=" + lowerdir, mnt}, ExitUsage,
			`strata: mount: --backend "zfs": want one of auto, kernel, fuse`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			requireFails(t, run(t, append([]string{"mount"}, tc.args...)...), tc.code, tc.msg)
			if mountedHere(t, mnt) {
				t.Fatal("mounted after an error")
			}
			equal(t, "[]", fmt.Sprint(names(t, filepath.Join(base, "upper"))), "upper stays empty")
		})
	}
}

// failingKernel is a kernel backend on a machine without overlayfs.
type failingKernel struct{ kernelBackend }

func (failingKernel) Mount(MountRequest) error {
	return syscall.ENODEV
}

// asFUSE is the kernel backend put in the "fuse" slot.
type asFUSE struct{ kernelBackend }

func (asFUSE) Name() string { return "fuse" }

// TestMount_AutoFallsBackToFUSE shows the seam the FUSE backend plugs
// into: with "auto", a kernel that cannot mount hands over to
// backends["fuse"]. Here the "fuse" slot holds the real kernel backend.
func TestMount_AutoFallsBackToFUSE(t *testing.T) {
	testutil.RequireOverlay(t)
	saved := backends
	t.Cleanup(func() { backends = saved })
	backends = map[string]Backend{"kernel": failingKernel{}, "fuse": asFUSE{}}

	base, lowerdir := layers(t)
	mnt := filepath.Join(base, "mnt")
	cleanupMount(t, mnt)
	r := run(t, "--format", "json", "--debug", "mount", "-o", "lowerdir="+lowerdir, mnt)
	equal(t, ExitOK, r.code, r.stderr)
	var rep mountReport
	must(t, json.Unmarshal([]byte(r.stdout), &rep))
	equal(t, "fuse", rep.Backend)
	contains(t, r.stderr, "strata: debug: kernel backend cannot mount (no such device); trying fuse")

	// --backend kernel never falls back.
	must(t, unix.Unmount(mnt, 0))
	requireFails(t, run(t, "--backend", "kernel", "mount", "-o", "lowerdir="+lowerdir, mnt),
		ExitNotSupported, "strata: mount: no such device")
}

func TestMount_UpperInUse(t *testing.T) {
	testutil.RequireOverlay(t)
	base, lowerdir := layers(t)
	mnt, mnt2 := filepath.Join(base, "mnt"), filepath.Join(base, "mnt2")
	must(t, os.Mkdir(mnt2, 0o755))
	cleanupMount(t, mnt)
	cleanupMount(t, mnt2)
	opts := "lowerdir=" + lowerdir + ",upperdir=" + filepath.Join(base, "upper") + ",workdir=" + filepath.Join(base, "work")

	r := run(t, "--debug", "mount", "-o", opts, mnt)
	equal(t, ExitOK, r.code, r.stderr)
	contains(t, r.stderr, "strata: debug: kernel: ")

	r = run(t, "mount", "-o", opts, mnt2)
	equal(t, ExitExists, r.code, r.stderr)
	contains(t, r.stderr, "already in use")
	if mountedHere(t, mnt2) {
		t.Fatal("second mount of one upper dir succeeded")
	}
}
