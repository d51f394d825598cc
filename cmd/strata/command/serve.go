package command

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/stratafs/strata/snapshot"
	ctrdsnap "github.com/stratafs/strata/snapshot/containerd"
	"github.com/stratafs/strata/snapshot/proxy"
)

// DefaultAddress is where `strata serve` listens unless told otherwise.
const DefaultAddress = "/run/strata/strata.sock"

type serveOptions struct {
	g              *globalOptions
	address        string
	metricsAddress string
}

func newServeCommand(g *globalOptions) *cobra.Command {
	o := &serveOptions{g: g}
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Serve the store to containerd as a proxy snapshotter plugin",
		Long: `serve opens the store at --root and serves it over containerd's snapshots
gRPC API on a unix socket, for containerd's proxy_plugins:

  [proxy_plugins.strata]
    type = "snapshot"
    address = "` + DefaultAddress + `"

It stops on SIGTERM or SIGINT: it stops accepting, lets calls in flight
finish, and leaves running containers' root filesystems mounted.

With --backend fuse each container's rootfs (and each multi-layer view)
is served by its own FUSE server process under --root/mounts/; those
servers outlive serve (a restart keeps them; one that died is remounted).
Under systemd use KillMode=process (or mixed) so that stopping serve does
not kill them.`,
		Args: exactArgs(0, "none"),
		RunE: func(cmd *cobra.Command, _ []string) error { return o.run(cmd) },
	}
	f := cmd.Flags()
	f.StringVar(&o.address, "address", DefaultAddress, "unix socket to serve on")
	f.StringVar(&o.metricsAddress, "metrics-address", "", "serve Prometheus metrics on host:port (off when empty)")
	return cmd
}

func (o *serveOptions) run(cmd *cobra.Command) (err error) {
	backend := snapshot.BackendKernel
	if o.g.backend == "fuse" {
		backend = snapshot.BackendFUSE
	}
	st, err := snapshot.Open(o.g.root, snapshot.WithBackend(backend))
	if err != nil {
		return err
	}
	defer func() {
		// Close releases the store's lock and owner file: report it.
		if cerr := st.Close(); cerr != nil && err == nil {
			err = cerr
		}
	}()
	var opts []proxy.Option
	if o.metricsAddress != "" {
		opts = append(opts, proxy.WithMetricsAddress(o.metricsAddress))
	}
	o.g.debugf(cmd, "serving store %s (backend %s) on %s", o.g.root, backend, o.address)
	if err := proxy.Serve(cmd.Context(), ctrdsnap.New(st), o.address, opts...); err != nil {
		return fmt.Errorf("address %q: %w", o.address, err)
	}
	return nil
}
