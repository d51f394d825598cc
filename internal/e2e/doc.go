// Package e2e runs strata as a containerd proxy snapshotter end to end, with
// a real containerd daemon, runc and kernel mounts. It holds only tests:
//
//	sudo ./internal/e2e/setup.sh            # containerd runc umoci busybox-static
//	sudo STRATA_E2E=1 go test -v ./internal/e2e
//	sudo STRATA_E2E=1 STRATA_E2E_BENCH=1 go test -v -run Timing ./internal/e2e
//
// Without STRATA_E2E=1 every test skips. With it, a missing tool or missing
// root skips with the reason, or fails under STRATA_REQUIRE_MOUNT=1 (as
// `make e2e` and .ci/run set). The tests install nothing; setup.sh does, with
//
//	apt-get install -y --no-install-recommends containerd runc umoci busybox-static
//
// Each test builds a two-layer OCI image with umoci from busybox-static,
// starts the proxy (see below) and its own containerd (root, state, sockets
// and config under a temp dir, CRI disabled, a proxy_plugins.strata stanza
// naming the proxy's socket), imports the image with --snapshotter strata
// and runs containers with ctr. Afterwards it checks that containerd's GC
// removed every snapshot from the proxy and that no mount is left under the
// temp dir, and it removes what containerd and ctr create under
// /run/containerd whatever --state says (shim sockets in s/, runc state in
// runc/, fifos in fifo/).
//
// The proxy is a command line template in STRATA_E2E_PROXY (split on
// blanks), with {root} and {address} replaced by the snapshotter root and
// socket and {metrics} by a free 127.0.0.1 port for Prometheus metrics
// (optional; the timing run logs them when served), for instance
//
//	STRATA_E2E_PROXY='strata serve --root {root} --address {address} --metrics-address {metrics}'
//
// With {backend} in the template, TestContainerdRunAndGC and
// TestProxyRestart run once per backend as subtests (kernel and fuse, or
// the comma-separated list in STRATA_E2E_BACKENDS), e.g.
//
//	STRATA_E2E_PROXY='strata serve --backend {backend} --root {root} --address {address} --metrics-address {metrics}'
//
// With fuse they also check that a running container's rootfs is a FUSE
// mount under the proxy root, that its FUSE server survives a SIGKILL of
// the proxy and its restart unchanged, and that no server is left after GC.
//
// By default the tests build and run ./cmd/stubproxy, which serves
// containerd's own overlayfs snapshotter through snapshot/proxy. The proxy
// must stop cleanly (exit 0) on SIGTERM and must accept a stale socket left
// by a killed predecessor.
//
// Every external command runs under a timeout; a whole run takes well under
// five minutes. Only containerd 1.6 is tested (Debian 12's); what 2.x adds
// is documented in snapshot/proxy/README.md, not tested.
package e2e
