package command

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestDebugMakeDemoImage(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "img")
	out := lines(ok(t, t.TempDir(), "debug", "make-demo-image", dir))
	equal(t, 4, len(out))
	equal(t, dir+":demo", out[3])
	for _, f := range []string{"index.json", "oci-layout"} {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			t.Fatal(err)
		}
	}
	// Hidden from help.
	r := run(t, "--help")
	if r.code != ExitOK || strings.Contains(r.stdout, "\n  debug ") {
		t.Fatalf("debug shows in help: %s", r.stdout)
	}
}
