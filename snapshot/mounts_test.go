package snapshot

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/stratafs/strata/internal/testutil"
	"github.com/stratafs/strata/overlay"
)

// mountAll performs ms on target with mount(2), as a runtime would, and
// registers the unmount with t.Cleanup.
func mountAll(t *testing.T, ms []Mount, target string) {
	t.Helper()
	for _, m := range ms {
		var flags uintptr
		var data []string
		for _, o := range m.Options {
			switch o {
			case "ro":
				flags |= unix.MS_RDONLY
			case "rw":
			case "rbind":
				flags |= unix.MS_BIND | unix.MS_REC
			default:
				data = append(data, o)
			}
		}
		if err := unix.Mount(m.Source, target, m.Type, flags&^unix.MS_RDONLY, strings.Join(data, ",")); err != nil {
			t.Fatalf("mount %+v on %s: %v", m, target, err)
		}
		t.Cleanup(func() {
			if err := unix.Unmount(target, 0); err != nil {
				t.Errorf("unmount %s: %v", target, err)
			}
		})
		if flags&unix.MS_RDONLY != 0 {
			// A bind mount becomes read-only only by a remount.
			if err := unix.Mount("", target, "", unix.MS_REMOUNT|unix.MS_BIND|unix.MS_RDONLY|(flags&unix.MS_REC), ""); err != nil {
				t.Fatalf("remount %s read-only: %v", target, err)
			}
		}
	}
}

// TestKernelMounts assembles a three-layer chain with the store's own
// Mount values and the kernel: writes through an active snapshot, renames
// a lower directory (redirect_dir), deletes a lower file (whiteout), then
// checks a view of the result and that it is read-only.
func TestKernelMounts(t *testing.T) {
	testutil.RequireOverlay(t)
	s := newTestStore(t)
	ctx := context.Background()
	mustCommitted(t, s, "l1", "", map[string]string{"a": "1", "gone": "x"})
	base, _ := s.upperDir(mustActive(t, s, "l2-active", "l1"))
	if err := os.MkdirAll(filepath.Join(base, "dir", "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(base, "dir", "sub", "f"), []byte("deep"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := s.Commit(ctx, "l2", "l2-active"); err != nil {
		t.Fatal(err)
	}

	// Work in an active snapshot on l2 through a real overlay mount.
	ms, err := s.Prepare(ctx, "work", "l2")
	if err != nil {
		t.Fatal(err)
	}
	sub := t.TempDir()
	mnt := filepath.Join(sub, "rootfs")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	unmountWork := mountNow(t, ms, mnt)
	for _, step := range []error{
		os.Rename(filepath.Join(mnt, "dir"), filepath.Join(mnt, "moved")),
		os.Remove(filepath.Join(mnt, "gone")),
		os.WriteFile(filepath.Join(mnt, "a"), []byte("2"), 0o644),
	} {
		if step != nil {
			t.Fatal(step)
		}
	}
	unmountWork()
	if err := s.Commit(ctx, "l3", "work"); err != nil {
		t.Fatal(err)
	}

	vms, err := s.View(ctx, "v", "l3")
	if err != nil {
		t.Fatal(err)
	}
	if vms[0].Type != "overlay" || !slices.Contains(vms[0].Options, "redirect_dir=on") {
		t.Fatalf("view mounts %+v", vms)
	}
	view := filepath.Join(sub, "view")
	if err := os.Mkdir(view, 0o755); err != nil {
		t.Fatal(err)
	}
	mountAll(t, vms, view)
	if b, err := os.ReadFile(filepath.Join(view, "moved", "sub", "f")); err != nil || string(b) != "deep" {
		t.Errorf("moved/sub/f: %q, %v", b, err)
	}
	if _, err := os.Stat(filepath.Join(view, "dir")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("dir after rename: %v, want not exist", err)
	}
	if _, err := os.Stat(filepath.Join(view, "gone")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("gone: %v, want not exist", err)
	}
	if b, err := os.ReadFile(filepath.Join(view, "a")); err != nil || string(b) != "2" {
		t.Errorf("a: %q, %v", b, err)
	}
	if err := os.WriteFile(filepath.Join(view, "new"), nil, 0o644); !errors.Is(err, unix.EROFS) {
		t.Errorf("write in a view: %v, want EROFS", err)
	}

	// A view of a single layer is a read-only bind mount.
	v1, err := s.View(ctx, "v1", "l1")
	if err != nil {
		t.Fatal(err)
	}
	one := filepath.Join(sub, "one")
	if err := os.Mkdir(one, 0o755); err != nil {
		t.Fatal(err)
	}
	mountAll(t, v1, one)
	if b, err := os.ReadFile(filepath.Join(one, "a")); err != nil || string(b) != "1" {
		t.Errorf("l1 view a: %q, %v", b, err)
	}
	if err := os.WriteFile(filepath.Join(one, "new"), nil, 0o644); !errors.Is(err, unix.EROFS) {
		t.Errorf("write in a bind view: %v, want EROFS", err)
	}
}

// mountNow mounts ms on target and returns the unmount, which the test
// must call before committing; t.Cleanup unmounts if the test fails first.
func mountNow(t *testing.T, ms []Mount, target string) func() {
	t.Helper()
	var data []string
	for _, o := range ms[0].Options {
		if o != "rw" && o != "rbind" {
			data = append(data, o)
		}
	}
	if err := unix.Mount(ms[0].Source, target, ms[0].Type, 0, strings.Join(data, ",")); err != nil {
		t.Fatalf("mount %+v: %v", ms[0], err)
	}
	done := false
	t.Cleanup(func() {
		if !done {
			unix.Unmount(target, 0)
		}
	})
	return func() {
		if err := unix.Unmount(target, 0); err != nil {
			t.Fatalf("unmount %s: %v", target, err)
		}
		done = true
	}
}

func mustActive(t *testing.T, s *Store, key, parent string) string {
	t.Helper()
	if _, err := s.Prepare(context.Background(), key, parent); err != nil {
		t.Fatal(err)
	}
	return key
}

func TestTooManyLayersForKernel(t *testing.T) {
	s := newTestStore(t)
	chain := make([]uint64, overlay.MaxKernelLowers+1)
	for i := range chain {
		chain[i] = uint64(i + 1)
	}
	_, err := kernelBackend{}.mounts(s, &record{ID: 999, Kind: KindActive, Parent: "x", Chain: chain})
	wantErr(t, "mounts of 501 lowers", err, overlay.ErrTooManyLayers)
	wantErr(t, "mounts of 501 lowers", err, ErrFailedPrecondition)
	if _, err := (kernelBackend{}).mounts(s, &record{ID: 999, Kind: KindView, Parent: "x", Chain: chain[:overlay.MaxKernelLowers]}); err != nil {
		t.Fatalf("mounts of %d lowers: %v", overlay.MaxKernelLowers, err)
	}
}
