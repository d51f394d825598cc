// Package selfexec lets a test binary stand in for the strata command, so
// that code which runs strata as a child process (the FUSE backend starts
// its servers as `strata mount --backend fuse ...`, re-executing
// os.Executable()) works under `go test`, where the executable is the test
// binary.
//
// Call Main first thing in TestMain and Cleanup after the tests:
//
//	func TestMain(m *testing.M) {
//		selfexec.Main()
//		code := m.Run()
//		selfexec.Cleanup()
//		os.Exit(code)
//	}
//
// and pass Command where a snapshot.ServerCommandFunc is wanted.
//
// Under -race the test binary starts slowly (about half a second here),
// and the FUSE backend execs two processes per mount, so Command then
// builds ./cmd/strata once without -race and runs that instead, falling
// back to the test binary when it cannot build.
package selfexec

import (
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sync"

	"github.com/stratafs/strata/cmd/strata/command"
)

// Env marks a process started from a test binary as strata.
const Env = "STRATA_TEST_AS_STRATA"

// Main runs strata and exits if this process was started as strata (by
// Command, or by such a process re-executing itself); otherwise it
// returns.
func Main() {
	if os.Getenv(Env) == "1" {
		os.Exit(command.Main(os.Args[1:], os.Stdout, os.Stderr))
	}
}

var (
	buildOnce sync.Once
	built     string // non-race strata binary, "" if none
	buildDir  string
)

// Command runs strata with args: this test binary, or under -race a
// non-race build of ./cmd/strata.
func Command(args []string) *exec.Cmd {
	if raceEnabled {
		buildOnce.Do(buildStrata)
		if built != "" {
			return exec.Command(built, args...) //nolint:gosec // strata, built above
		}
	}
	exe, err := os.Executable()
	if err != nil {
		exe = os.Args[0]
	}
	cmd := exec.Command(exe, args...) //nolint:gosec // this very executable
	cmd.Env = append(os.Environ(), Env+"=1")
	return cmd
}

// buildStrata builds ./cmd/strata (found from this file's path) into a
// temp dir.
func buildStrata() {
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		return
	}
	src := filepath.Join(filepath.Dir(file), "..", "..", "cmd", "strata")
	if _, err := os.Stat(src); err != nil {
		return
	}
	dir, err := os.MkdirTemp("", "strata-selfexec-")
	if err != nil {
		return
	}
	out := filepath.Join(dir, "strata")
	// go test puts its own GOROOT/bin first in PATH.
	cmd := exec.Command("go", "build", "-o", out, ".") //nolint:gosec // out is a temp path made above
	cmd.Dir = src
	if err := cmd.Run(); err != nil {
		_ = os.RemoveAll(dir) // best effort: Command falls back to this binary
		return
	}
	built, buildDir = out, dir
}

// Cleanup removes the binary Command built, if any.
func Cleanup() {
	if buildDir != "" {
		_ = os.RemoveAll(buildDir) // best effort: a temp dir
	}
}
