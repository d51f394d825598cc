// Package bench is strata's cross-backend benchmark harness.
//
// # Model
//
// A [LayerSet] is generated from a seed (see [Spec]): a main stack of
// layers with overrides, whiteouts, an opaque dir, a large file in the
// bottom layer and a wide directory spread over eight layers; deep stacks
// for lookups through 1..128 layers; a git stack (a committed repository
// in a lower layer, changed above); and a tarball of small files. Every
// generated layer carries its name index next to it, as a committed
// snapshot does (overlay.IndexPath). The
// generator also computes the merged view the layers must show (the
// manifest), so every [Workload] checks its result: a fast wrong answer is
// reported as wrong, not as fast.
//
// A [Backend] mounts a list of layers (topmost first) with an optional
// upper dir. Known backends: "native" (a flattened copy, bind-mounted: the
// cost of no overlay at all), "kernel-overlayfs" (plain mount(2) with the
// kernel's default options), "strata-kernel" (overlay.Mount with strata's
// on-disk format options), "fuse-overlayfs" (the Debian binary) and
// "strata-fuse" (strata mount --backend fuse). Adding a backend is
// adding one type to [AllBackends].
//
// [Run] runs every selected workload in its cache states (read-only ones
// cold, remount and warm unless [Options] narrows them; mutating ones in
// remount; mount-dN cold and remount) for several rounds, backends alternating within each round, and
// returns a [Report] with every sample; the report renders as Markdown,
// JSON and an SVG chart.
//
// # Caveats
//
//   - Needs root (mounts, drop_caches). Mutating workloads get a fresh upper
//     per round; nothing is ever written to a generated layer. Native's
//     fresh copy hard-links the large file and restores it after the run.
//   - Timings exclude mounting (but for workloads with
//     [Workload.TimesMount], mount-dN) and result checks; they include the
//     process start of external tools (find, tar, rm, fio, git).
//   - By default all data lives on a fresh loop-mounted ext4 image (no
//     discard), made, mounted and removed by [Run] ([Options.NoImage] to
//     keep it directly in [Options.Out]).
//   - Copy-up durability differs: kernel overlayfs fsyncs every copy-up
//     (unless mounted volatile); fuse-overlayfs does not. Each row says so.
package bench
