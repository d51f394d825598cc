//go:build linux

package overlaytest_test

import (
	"testing"

	"github.com/stratafs/strata/internal/testutil"
	"github.com/stratafs/strata/overlay/overlaytest"
)

// TestKernel runs the suite against kernel overlayfs, the reference.
func TestKernel(t *testing.T) {
	testutil.RequireOverlay(t)
	overlaytest.Run(t, overlaytest.Kernel())
}

// TestKernelVariants runs the suite against kernel overlayfs mounted
// with options that change its quirks, to check that the checks accept
// each behaviour they claim to: without redirect_dir (rename of a lower
// dir fails EXDEV) and metacopy, and with index=on (copy-up keeps hard
// links).
func TestKernelVariants(t *testing.T) {
	testutil.RequireOverlay(t)
	for name, extra := range map[string][]string{
		"NoRedirect": {"metacopy=off", "redirect_dir=off"},
		"Index":      {"index=on"},
	} {
		t.Run(name, func(t *testing.T) { overlaytest.Run(t, overlaytest.Kernel(extra...)) })
	}
}
