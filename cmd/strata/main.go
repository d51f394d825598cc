// Command strata is the command-line front end of the strata layered
// filesystem. All logic lives in package command; this file only wires the
// process to it.
package main

import (
	"os"
	"path/filepath"

	"github.com/stratafs/strata/cmd/strata/command"
)

func main() {
	// Invoked as fuse-strata (a symlink), strata takes fuse-overlayfs's
	// command line.
	if filepath.Base(os.Args[0]) == command.FuseOverlayfsName {
		os.Exit(command.FuseOverlayfsMain(os.Args[1:], os.Stdout, os.Stderr))
	}
	os.Exit(command.Main(os.Args[1:], os.Stdout, os.Stderr))
}
