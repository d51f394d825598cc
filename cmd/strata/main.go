// Command strata is the command-line front end of the strata layered
// filesystem. All logic lives in package command; this file only wires the
// process to it.
package main

import (
	"os"

	"github.com/stratafs/strata/cmd/strata/command"
)

func main() {
	os.Exit(command.Main(os.Args[1:], os.Stdout, os.Stderr))
}
