package command

import (
	"encoding/json"
	"runtime"
	"strings"
	"testing"

	"github.com/stratafs/strata/internal/testutil"
)

func TestVersion(t *testing.T) {
	saved := probeKernel
	t.Cleanup(func() { probeKernel = saved })
	probeKernel = func() kernelFeatures {
		return kernelFeatures{Release: "6.18.0-test", Overlay: true, FUSE: false,
			Probed: []Feat{{"metacopy", true}, {"userxattr", false}}, Notes: []string{"userxattr: EINVAL"}}
	}

	r := run(t, "version")
	equal(t, ExitOK, r.code)
	want := []string{
		"strata: " + Version,
		"go: " + runtime.Version() + " " + runtime.GOOS + "/" + runtime.GOARCH,
		"kernel: 6.18.0-test",
		"overlayfs: yes",
		"fuse: no",
		"overlay metacopy: yes",
		"overlay userxattr: no",
	}
	equal(t, strings.Join(want, "\n"), squeeze(r.stdout))

	r = run(t, "--debug", "version")
	equal(t, "strata: debug: userxattr: EINVAL\n", r.stderr)

	r = run(t, "--format", "json", "version")
	equal(t, ExitOK, r.code)
	var v versionInfo
	must(t, json.Unmarshal([]byte(r.stdout), &v))
	equal(t, Version, v.Version)
	equal(t, runtime.Version(), v.Go)
	equal(t, "6.18.0-test", v.Kernel.Release)
	equal(t, 2, len(v.Kernel.Probed))

	requireFails(t, run(t, "version", "extra"), ExitUsage, "strata: version: want 0 argument(s) (none), got 1; see 'strata version --help'")
}

func TestVersion_RealProbe(t *testing.T) {
	testutil.RequireOverlay(t) // overlay.Probe mounts
	k := probeKernel()
	if k.Release == "" || !k.Overlay || len(k.Probed) == 0 {
		t.Fatalf("probe: %+v", k)
	}
}

// squeeze trims lines and collapses runs of blanks (tabwriter padding).
func squeeze(s string) string {
	var lines []string
	for _, l := range strings.Split(strings.TrimSpace(s), "\n") {
		lines = append(lines, strings.Join(strings.Fields(l), " "))
	}
	return strings.Join(lines, "\n")
}
