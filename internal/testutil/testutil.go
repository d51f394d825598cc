// Package testutil holds helpers shared by strata's tests: privilege and
// device checks that skip with a clear reason, or fail when the run
// requires mounts (STRATA_REQUIRE_MOUNT=1, as .ci/run sets).
package testutil

import (
	"os"
	"testing"

	"golang.org/x/sys/unix"
)

// RequireMountEnv is the environment variable under which a test that
// cannot mount fails instead of skipping.
const RequireMountEnv = "STRATA_REQUIRE_MOUNT"

// Unavailable skips t with reason, or fails it when mounts are required.
func Unavailable(t testing.TB, reason string) {
	t.Helper()
	if os.Getenv(RequireMountEnv) == "1" {
		t.Fatalf("%s=1 but %s", RequireMountEnv, reason)
	}
	t.Skip(reason)
}

// RequireRoot skips (or fails, see Unavailable) unless running as root.
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		Unavailable(t, "test needs root to mount")
	}
}

// RequireOverlay needs root and kernel overlayfs.
func RequireOverlay(t testing.TB) {
	t.Helper()
	RequireRoot(t)
	b, err := os.ReadFile("/proc/filesystems")
	if err != nil || !containsField(string(b), "overlay") {
		Unavailable(t, "kernel overlayfs is not available (no 'overlay' in /proc/filesystems)")
	}
}

// RequireFUSE needs root and a usable /dev/fuse.
func RequireFUSE(t testing.TB) {
	t.Helper()
	RequireRoot(t)
	fd, err := unix.Open("/dev/fuse", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		Unavailable(t, "/dev/fuse is not usable: "+err.Error())
		return
	}
	_ = unix.Close(fd) // a probe: opening was the test
}

func containsField(s, f string) bool {
	start := 0
	for i := 0; i <= len(s); i++ {
		if i == len(s) || s[i] == '\n' || s[i] == '\t' || s[i] == ' ' {
			if s[start:i] == f {
				return true
			}
			start = i + 1
		}
	}
	return false
}
