//go:build linux

package fuse

import (
	"testing"

	"golang.org/x/sys/unix"

	"github.com/stratafs/strata/internal/testutil"
	"github.com/stratafs/strata/overlay"
)

// TestDirFdOPath: the held upper dir fds may be O_PATH (a dir the server
// cannot read); restoring the parent's times and marking it impure still
// work on them.
func TestDirFdOPath(t *testing.T) {
	testutil.RequireRoot(t)
	dir := t.TempDir()
	dfd, err := unix.Open(dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(dfd)
	ts := [2]unix.Timespec{{Sec: 1000, Nsec: 1}, {Sec: 2000, Nsec: 2}}
	if err := dirFdTimes(dfd, &ts); err != nil {
		t.Fatal(err)
	}
	var st unix.Stat_t
	if err := unix.Stat(dir, &st); err != nil {
		t.Fatal(err)
	}
	if st.Atim != ts[0] || st.Mtim != ts[1] {
		t.Errorf("times %v %v, want %v", st.Atim, st.Mtim, ts)
	}
	u := &union{format: overlay.Format{}}
	if err := u.markImpureFd(dfd); err != nil {
		t.Fatal(err)
	}
	if _, err := unix.Getxattr(dir, u.format.Xattr(overlay.XattrImpure), nil); err != nil {
		t.Errorf("no impure xattr: %v", err)
	}
}
