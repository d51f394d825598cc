// Package reliability holds strata's reliability tests, which cut across
// packages: hostile layer tars fed through the store (Store.ImportTar),
// fuzz targets for tar import and whiteout name handling, a crash
// harness that SIGKILLs a child process working on a store, full-disk
// (ENOSPC) imports and copy-ups on a small loop-mounted ext4, lock
// release after a crashed owner, a load test of 16 workers through one
// FUSE mount (TestLoadFUSE), a metamorphic test that applies random
// operation sequences to kernel overlayfs, strata FUSE and a plain-dir
// model and compares them after every step (TestMetamorphic), and
// permission checks as an unprivileged user on kernel overlayfs and FUSE
// (TestPrivileges). The package has no API; everything is in its tests.
//
// Bounds: every test in `go test ./...` runs in seconds. Heavy cases run
// only with STRATA_STRESS=1 (a million-entry layer, many more crash
// kills, a 60 s load test, 20 metamorphic seeds of 300 steps). The crash
// harness takes STRATA_CRASH_SEED and STRATA_CRASH_KILLS; the metamorphic
// test STRATA_META_SEED and STRATA_META_STEPS (a failure prints both);
// the load test STRATA_LOAD_SECONDS. .ci/fuzz runs each fuzz target for
// FUZZTIME.
package reliability
