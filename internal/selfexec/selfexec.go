// Package selfexec lets a test binary stand in for the strata command, so
// that code which runs strata as a child process (the FUSE backend starts
// its servers as `strata mount --backend fuse ...`, re-executing
// os.Executable()) works under `go test`, where the executable is the test
// binary.
//
// Call Main first thing in TestMain:
//
//	func TestMain(m *testing.M) { selfexec.Main(); os.Exit(m.Run()) }
//
// and pass Command where a snapshot.ServerCommandFunc is wanted.
package selfexec

import (
	"os"
	"os/exec"

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

// Command runs this test binary as strata with args.
func Command(args []string) *exec.Cmd {
	exe, err := os.Executable()
	if err != nil {
		exe = os.Args[0]
	}
	cmd := exec.Command(exe, args...)
	cmd.Env = append(os.Environ(), Env+"=1")
	return cmd
}
