//go:build linux

package fuse

import (
	"bytes"
	"encoding/binary"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/stratafs/strata/internal/testutil"
)

// capXattr is a version 2 security.capability value granting cap_net_raw
// (permitted, effective).
func capXattr() []byte {
	b := make([]byte, 20)
	binary.LittleEndian.PutUint32(b[0:], 0x02000001)
	binary.LittleEndian.PutUint32(b[4:], 1<<unix.CAP_NET_RAW)
	return b
}

// attrView is what a metadata change of a lower file must leave visible.
type attrView struct {
	mode         uint32
	uid, gid     uint32
	atime, mtime unix.Timespec
	size         int64
	data         string
	cap          bool
	user         string
}

func viewOf(t *testing.T, p string) attrView {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Lstat(p, &st); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	v := attrView{mode: st.Mode, uid: st.Uid, gid: st.Gid, atime: st.Atim, mtime: st.Mtim, size: st.Size, data: string(data)}
	buf := make([]byte, 64)
	if n, err := unix.Lgetxattr(p, "security.capability", buf); err == nil {
		v.cap = bytes.Equal(buf[:n], capXattr())
	}
	if n, err := unix.Lgetxattr(p, "user.k", buf); err == nil {
		v.user = string(buf[:n])
	}
	return v
}

// TestMetadataCopyUpAsKernel: chmod, chown and utimes of lower files
// (FUSE: metadata-only copy-ups with the change applied while they are
// built) leave the same mode, owner, times, data and xattrs as kernel
// overlayfs: a copy-up keeps file capabilities and set-id bits, and a
// chown clears them afterwards.
func TestMetadataCopyUpAsKernel(t *testing.T) {
	testutil.RequireFUSE(t)
	testutil.RequireOverlay(t)
	at := unix.Timespec{Sec: 1_000_000, Nsec: 5}
	ops := map[string]func(p string) error{
		"chmod":      func(p string) error { return unix.Chmod(p, 0o4711) },
		"chown":      func(p string) error { return unix.Lchown(p, 2000, 2000) },
		"chgrp":      func(p string) error { return unix.Lchown(p, -1, 3000) },
		"utimes":     func(p string) error { return unix.UtimesNano(p, []unix.Timespec{at, at}) },
		"mtime-only": func(p string) error { return unix.UtimesNano(p, []unix.Timespec{{Nsec: unix.UTIME_OMIT}, at}) },
		"chmod-chown": func(p string) error {
			if err := unix.Chmod(p, 0o6755); err != nil {
				return err
			}
			return unix.Lchown(p, 0, 0)
		},
		"setxattr": func(p string) error { return unix.Lsetxattr(p, "user.k", []byte("new"), 0) },
	}
	views := map[string]map[string]attrView{}
	for _, be := range []string{"fuse", "kernel"} {
		l := newCrossLayers(t)
		for name := range ops {
			p := filepath.Join(l.lower, name)
			if err := os.WriteFile(p, []byte("data of "+name), 0o644); err != nil {
				t.Fatal(err)
			}
			if err := os.Lchown(p, 1000, 1000); err != nil {
				t.Fatal(err)
			}
			if err := unix.Chmod(p, 0o6755); err != nil {
				t.Fatal(err)
			}
			if err := unix.Lsetxattr(p, "security.capability", capXattr(), 0); err != nil {
				t.Skipf("cannot set file capabilities here: %v", err)
			}
			if err := unix.Lsetxattr(p, "user.k", []byte("v"), 0); err != nil {
				t.Skipf("no user xattrs here: %v", err)
			}
		}
		var root string
		if be == "fuse" {
			root, _ = mountFUSE(t, l)
		} else {
			root, _ = mountKernel(t, l)
		}
		views[be] = map[string]attrView{}
		for name, op := range ops {
			var lst unix.Stat_t
			if err := unix.Lstat(filepath.Join(l.lower, name), &lst); err != nil {
				t.Fatal(err)
			}
			p := filepath.Join(root, name)
			if err := op(p); err != nil {
				t.Fatalf("%s: %s: %v", be, name, err)
			}
			v := viewOf(t, p)
			if v.mtime == lst.Mtim {
				v.mtime = unix.Timespec{} // kept (the backends' lowers differ)
			}
			views[be][name] = v
		}
		if be == "fuse" {
			// the copies are metadata-only, in the kernel's format
			for name := range ops {
				p := filepath.Join(l.upper, name)
				if _, err := unix.Lgetxattr(p, "trusted.overlay.metacopy", nil); err != nil {
					t.Errorf("%s: upper copy has no metacopy xattr: %v", name, err)
				}
				fd, err := unix.Open(p, unix.O_RDONLY|unix.O_CLOEXEC, 0)
				if err != nil {
					t.Fatal(err)
				}
				off, err := unix.Seek(fd, 0, unix.SEEK_DATA)
				unix.Close(fd)
				if err != unix.ENXIO {
					t.Errorf("%s: metadata-only copy has data at %d (%v), want a hole", name, off, err)
				}
			}
		}
	}
	for name := range ops {
		f, k := views["fuse"][name], views["kernel"][name]
		// atime of changes that do not set it is whatever the read made it
		if name != "utimes" {
			f.atime, k.atime = unix.Timespec{}, unix.Timespec{}
		}
		if f != k {
			t.Errorf("%s:\n FUSE   %+v\n kernel %+v", name, f, k)
		}
	}
	if v := views["kernel"]["chmod"]; !v.cap || v.mode&0o4000 == 0 {
		t.Errorf("kernel chmod: %+v; the test expects copy-up to keep capabilities and set-id bits", v)
	}
}

// TestMetadataCopyUpSurvivesRemount: a metadata-only copy-up is complete
// on disk when the request returns (its xattrs are set before it is
// renamed into place): a new server on the same layer dirs sees the
// change and the lower data.
func TestMetadataCopyUpSurvivesRemount(t *testing.T) {
	testutil.RequireFUSE(t)
	l := newCrossLayers(t)
	at := unix.Timespec{Sec: 2_000_000}
	root, unmount := mountFUSE(t, l)
	for _, name := range []string{"a", "b", "d/x"} {
		if err := unix.UtimesNano(filepath.Join(root, name), []unix.Timespec{at, at}); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chmod(filepath.Join(root, "m"), 0o600); err != nil {
		t.Fatal(err)
	}
	unmount()
	for _, name := range []string{"a", "b", "d/x", "m"} {
		if _, err := unix.Lgetxattr(filepath.Join(l.upper, name), "trusted.overlay.origin", nil); err != nil {
			t.Errorf("%s: upper copy has no origin: %v", name, err)
		}
	}
	// nothing left behind in the work dir
	ents, err := os.ReadDir(l.work)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if e.Name() != "work" && e.Name() != "index" {
			t.Errorf("work dir holds %s after the copy-ups", e.Name())
		}
	}
	root, _ = mountFUSE(t, l)
	want := map[string]string{"a": "A", "b": "B", "d/x": "X", "m": "M"}
	for name, data := range want {
		p := filepath.Join(root, name)
		got, err := os.ReadFile(p)
		if err != nil || string(got) != data {
			t.Errorf("%s after remount: %q, %v; want %q", name, got, err, data)
		}
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			t.Fatal(err)
		}
		if name == "m" {
			if st.Mode&0o777 != 0o600 {
				t.Errorf("m after remount: mode %o, want 600", st.Mode&0o777)
			}
		} else if st.Mtim != at {
			t.Errorf("%s after remount: mtime %v, want %v", name, st.Mtim, at)
		}
	}
}
