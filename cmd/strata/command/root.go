// Package command implements strata's command line: one file per
// subcommand, each with an options struct and a RunE that writes to
// cmd.OutOrStdout(), and one in-process test per subcommand. No union or
// snapshot logic lives here: commands parse, validate and call overlay and
// snapshot and fuse. Snapshot commands use the vocabulary of
// containerd's `ctr snapshots`; inspection commands open the store
// read-only, all fail at once when another process owns it.
package command

import (
	"fmt"
	"io"
	"os"
	"slices"
	"strings"

	"github.com/spf13/cobra"
)

// Version is strata's version, set at build time with
// -ldflags "-X github.com/stratafs/strata/cmd/strata/command.Version=v1.2.3".
var Version = "dev"

// RootEnv names the environment variable that overrides the default --root.
const RootEnv = "STRATA_ROOT"

// DefaultRoot is the store root when neither --root nor STRATA_ROOT is set.
const DefaultRoot = "/var/lib/strata"

// Backends and output formats accepted by the global flags.
var (
	backendNames = []string{"auto", "kernel", "fuse"}
	formatNames  = []string{"table", "json"}
)

// globalOptions are the persistent flags every subcommand sees.
type globalOptions struct {
	root    string // store root (snapshot commands; unused by mount)
	backend string // auto, kernel or fuse
	format  string // table or json
	debug   bool   // trace decisions on stderr
}

func (g *globalOptions) addFlags(cmd *cobra.Command) {
	root := DefaultRoot
	if v := os.Getenv(RootEnv); v != "" {
		root = v
	}
	f := cmd.PersistentFlags()
	f.StringVar(&g.root, "root", root, "store root directory (env "+RootEnv+")")
	f.StringVar(&g.backend, "backend", "auto", "mount backend: "+strings.Join(backendNames, "|")+" (auto picks kernel where it works)")
	f.StringVar(&g.format, "format", "table", "output format: "+strings.Join(formatNames, "|"))
	f.BoolVar(&g.debug, "debug", false, "trace decisions on stderr")
	_ = cmd.RegisterFlagCompletionFunc("backend", cobra.FixedCompletions(backendNames, cobra.ShellCompDirectiveNoFileComp))
	_ = cmd.RegisterFlagCompletionFunc("format", cobra.FixedCompletions(formatNames, cobra.ShellCompDirectiveNoFileComp))
	_ = cmd.MarkPersistentFlagDirname("root")
}

func (g *globalOptions) validate() error {
	if !slices.Contains(backendNames, g.backend) {
		return usagef("--backend %q: want one of %s", g.backend, strings.Join(backendNames, ", "))
	}
	if !slices.Contains(formatNames, g.format) {
		return usagef("--format %q: want one of %s", g.format, strings.Join(formatNames, ", "))
	}
	return nil
}

// debugf writes a trace line to stderr when --debug is set.
func (g *globalOptions) debugf(cmd *cobra.Command, format string, a ...any) {
	if g.debug {
		_, _ = fmt.Fprintf(cmd.ErrOrStderr(), "strata: debug: "+format+"\n", a...)
	}
}

// NewRootCommand returns the strata command tree, ready to Execute.
func NewRootCommand() *cobra.Command {
	g := &globalOptions{}
	root := &cobra.Command{
		Use:   "strata",
		Short: "Layered copy-on-write filesystem for containers",
		Long: `strata stacks directory layers into one copy-on-write view, as kernel
overlayfs does, and mounts it with kernel overlayfs or its own FUSE server
(--backend fuse; invoked as fuse-strata it is a drop-in for fuse-overlayfs). Its layers use kernel overlayfs's on-disk format.

Its snapshot store (--root) holds image layers and containers as containerd
snapshots: import an image (import-image), look at it (ls, tree, layers,
files, which), run a container on it (prepare, mount, umount, commit) and
keep the store honest (check, gc).`,
		Version:       Version,
		SilenceErrors: true, // Main prints one line
		SilenceUsage:  true, // errors are not usage dumps
		PersistentPreRunE: func(cmd *cobra.Command, args []string) error {
			return g.validate()
		},
	}
	root.SetUsageTemplate(root.UsageTemplate() + "{{if not .HasParent}}\n" + exitStatusHelp + "\n{{end}}")
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return classified{err, ErrUsage} })
	g.addFlags(root)
	root.AddCommand(
		newMountCommand(g),
		newUmountCommand(g),
		newVersionCommand(g),
		newServeCommand(g),
		newImportCommand(g),
		newImportImageCommand(g),
		newLsCommand(g),
		newTreeCommand(g),
		newInfoCommand(g),
		newUsageCommand(g),
		newMountsCommand(g),
		newPrepareCommand(g),
		newViewCommand(g),
		newCommitCommand(g),
		newRmCommand(g),
		newLabelCommand(g),
		newLayersCommand(g),
		newFilesCommand(g),
		newWhichCommand(g),
		newDiffCommand(g),
		newCheckCommand(g),
		newGCCommand(g),
		newDebugCommand(g),
	)
	return root
}

// Main runs strata with args, writing output to stdout and the one-line
// error report to stderr, and returns the process exit status.
func Main(args []string, stdout, stderr io.Writer) int {
	root := NewRootCommand()
	root.SetArgs(args)
	root.SetOut(stdout)
	root.SetErr(stderr)
	cmd, err := root.ExecuteC()
	if err == nil {
		return ExitOK
	}
	if cmd == nil || cmd == root {
		// The root runs nothing itself: its errors are cobra's own (unknown
		// command, bad flag), all usage errors.
		if ExitCode(err) == ExitFailure {
			err = classified{err, ErrUsage}
		}
		_, _ = fmt.Fprintf(stderr, "strata: %v\n", err)
		return ExitCode(err)
	}
	name := strings.TrimPrefix(cmd.CommandPath(), root.Name()+" ")
	if msg := err.Error(); strings.HasPrefix(msg, name+" ") || slices.ContainsFunc(append(cmd.Aliases, cmd.Name()),
		func(a string) bool { return strings.HasPrefix(msg, a+" ") }) {
		// The store's errors already start with the operation:
		// `prepare "c1": parent "sha256:ab…": not found`.
		_, _ = fmt.Fprintf(stderr, "strata: %v\n", err)
		return ExitCode(err)
	}
	_, _ = fmt.Fprintf(stderr, "strata: %s: %v\n", name, err)
	return ExitCode(err)
}

// exactArgs is cobra.ExactArgs classified as a usage error.
func exactArgs(n int, what string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) != n {
			return usagef("want %d argument(s) (%s), got %d; see '%s --help'", n, what, len(args), cmd.CommandPath())
		}
		return nil
	}
}
