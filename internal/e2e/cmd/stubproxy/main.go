// Command stubproxy serves containerd's own overlayfs snapshotter through
// strata's snapshot/proxy package. It stands in for `strata serve` in the
// containerd end-to-end tests (internal/e2e) and takes the same flags:
//
//	stubproxy --root DIR --address SOCKET [--metrics-address HOST:PORT]
//
// It stops gracefully on SIGTERM or SIGINT.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"

	"github.com/containerd/containerd/v2/plugins/snapshots/overlay"

	"github.com/stratafs/strata/snapshot/proxy"
)

func main() {
	root := flag.String("root", "", "snapshotter root directory (required)")
	address := flag.String("address", "", "unix socket to serve on (required)")
	metrics := flag.String("metrics-address", "", "serve Prometheus metrics on this host:port")
	flag.Parse()
	if *root == "" || *address == "" {
		fmt.Fprintln(os.Stderr, "stubproxy: --root and --address are required")
		flag.Usage()
		os.Exit(2)
	}
	if err := run(*root, *address, *metrics); err != nil {
		fmt.Fprintln(os.Stderr, "stubproxy:", err)
		os.Exit(1)
	}
}

func run(root, address, metrics string) (err error) {
	sn, err := overlay.NewSnapshotter(root)
	if err != nil {
		return fmt.Errorf("overlay snapshotter at %q: %w", root, err)
	}
	defer func() {
		if cerr := sn.Close(); cerr != nil && err == nil {
			err = fmt.Errorf("close snapshotter at %q: %w", root, cerr)
		}
	}()
	var opts []proxy.Option
	if metrics != "" {
		opts = append(opts, proxy.WithMetricsAddress(metrics))
	}
	return proxy.Serve(context.Background(), sn, address, opts...)
}
