// Package reliability holds strata's reliability tests, which cut across
// packages: hostile layer tars fed through the store (Store.ImportTar),
// fuzz targets for tar import and whiteout name handling, a crash
// harness that SIGKILLs a child process working on a store, full-disk
// (ENOSPC) imports and copy-ups on a small loop-mounted ext4, and lock
// release after a crashed owner. The package has no API; everything is in
// its tests.
//
// Bounds: every test in `go test ./...` runs in seconds. Heavy cases run
// only with STRATA_STRESS=1 (a million-entry layer, many more crash
// kills). The crash harness takes STRATA_CRASH_SEED and
// STRATA_CRASH_KILLS. .ci/fuzz runs each fuzz target for FUZZTIME.
package reliability
