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
