package command

import (
	"testing"
)

func TestRoot_HelpDocumentsExitStatus(t *testing.T) {
	r := run(t, "help")
	equal(t, ExitOK, r.code)
	for _, want := range []string{"mount", "umount", "version", "completion", "--root", "--backend", "--format", "--debug",
		"Exit status:", "2  usage error", "3  not found", "4  already exists"} {
		contains(t, r.stdout, want)
	}
}

func TestRoot_UsageErrors(t *testing.T) {
	requireFails(t, run(t, "bogus"), ExitUsage, `strata: unknown command "bogus" for "strata"`)
	requireFails(t, run(t, "--backend", "zfs", "version"), ExitUsage, `strata: version: --backend "zfs": want one of auto, kernel, fuse`)
	requireFails(t, run(t, "--format", "yaml", "version"), ExitUsage, `strata: version: --format "yaml": want one of table, json`)
	requireFails(t, run(t, "--nope"), ExitUsage, `strata: unknown flag: --nope`)
}

func TestRoot_NoShorthandOnGlobals(t *testing.T) {
	// -o belongs to mount; globals take no single-letter shorthands.
	root := NewRootCommand()
	for _, name := range []string{"root", "backend", "format", "debug"} {
		f := root.PersistentFlags().Lookup(name)
		if f == nil {
			t.Fatalf("no flag --%s", name)
		}
		equal(t, "", f.Shorthand, name)
	}
}

func TestRoot_RootFromEnv(t *testing.T) {
	t.Setenv(RootEnv, "/srv/strata")
	equal(t, "/srv/strata", NewRootCommand().PersistentFlags().Lookup("root").DefValue)
	t.Setenv(RootEnv, "")
	equal(t, DefaultRoot, NewRootCommand().PersistentFlags().Lookup("root").DefValue)
}
