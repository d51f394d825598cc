package command

import (
	"testing"
)

func TestCompletion(t *testing.T) {
	for _, shell := range []string{"bash", "zsh", "fish", "powershell"} {
		r := run(t, "completion", shell)
		equal(t, ExitOK, r.code, shell)
		contains(t, r.stdout, "strata", shell)
	}
	// Flag values complete from the fixed lists.
	r := run(t, "__complete", "--backend", "")
	equal(t, ExitOK, r.code)
	contains(t, r.stdout, "kernel\n")
	contains(t, r.stdout, "fuse\n")
}
