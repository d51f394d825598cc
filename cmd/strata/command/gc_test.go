package command

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestGC(t *testing.T) {
	root, _ := demoStore(t)
	equal(t, "reclaimed 0 B (0 bytes)\n", ok(t, root, "gc"))
	orphan := filepath.Join(root, "snapshots", "999", "fs")
	mkfiles(t, orphan, "big="+strings.Repeat("x", 1<<20))
	var rep map[string]int64
	decode(t, ok(t, root, "gc", "--format", "json"), &rep)
	if rep["reclaimed"] < 1<<20 {
		t.Fatalf("reclaimed %d, want >= 1 MiB", rep["reclaimed"])
	}
	if _, err := os.Stat(orphan); !os.IsNotExist(err) {
		t.Fatal("orphan stays")
	}
	ok(t, root, "check")
}
