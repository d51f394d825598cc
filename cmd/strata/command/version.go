package command

import (
	"encoding/json"
	"fmt"
	"os"
	"runtime"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"

	"github.com/stratafs/strata/overlay"
)

type versionOptions struct {
	g *globalOptions
}

func newVersionCommand(g *globalOptions) *cobra.Command {
	o := &versionOptions{g: g}
	return &cobra.Command{
		Use:   "version",
		Short: "Print strata's version, Go version and kernel features",
		Args:  exactArgs(0, "none"),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return o.run(cmd)
		},
	}
}

// versionInfo is what `strata version` prints.
type versionInfo struct {
	Version string         `json:"version"`
	Go      string         `json:"go"`
	OS      string         `json:"os"`
	Arch    string         `json:"arch"`
	Kernel  kernelFeatures `json:"kernel"`
}

// kernelFeatures is what strata knows about the running kernel.
type kernelFeatures struct {
	Release string   `json:"release"`         // uname -r
	Overlay bool     `json:"overlay"`         // overlay listed in /proc/filesystems
	FUSE    bool     `json:"fuse"`            // /dev/fuse opens read-write
	Probed  []Feat   `json:"features"`        // overlay mount features, probed
	Notes   []string `json:"notes,omitempty"` // why a feature is missing
}

// Feat is one probed kernel feature.
type Feat struct {
	Name      string `json:"name"`
	Supported bool   `json:"supported"`
}

// probeKernel fills kernelFeatures; overlay.Probe tries each overlay
// feature with a real mount (it needs root). A var so tests can swap it.
var probeKernel = func() kernelFeatures {
	k := kernelFeatures{Probed: []Feat{}}
	var u unix.Utsname
	if unix.Uname(&u) == nil {
		k.Release = unix.ByteSliceToString(u.Release[:])
	}
	if b, err := os.ReadFile("/proc/filesystems"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			f := strings.Fields(line)
			if len(f) > 0 {
				switch f[len(f)-1] {
				case "overlay":
					k.Overlay = true
				case "fuse":
					k.FUSE = true
				}
			}
		}
	}
	if fd, err := unix.Open("/dev/fuse", unix.O_RDWR|unix.O_CLOEXEC, 0); err == nil {
		_ = unix.Close(fd)
	} else {
		k.FUSE = false
	}
	f, err := overlay.Probe()
	if err != nil {
		k.Notes = append(k.Notes, "overlay features not probed: "+err.Error())
		return k
	}
	k.Probed = []Feat{
		{"new-mount-api", f.NewMountAPI},
		{"lowerdir+", f.LowerdirPlus},
		{"layer-fd", f.LayerFD},
		{"userxattr", f.UserXattr},
		{"redirect_dir", f.RedirectDir},
		{"metacopy", f.Metacopy},
		{"index", f.Index},
		{"volatile", f.Volatile},
		{"xino", f.Xino},
	}
	k.Notes = append(k.Notes, f.Notes...)
	return k
}

func (o *versionOptions) run(cmd *cobra.Command) error {
	v := versionInfo{
		Version: Version,
		Go:      runtime.Version(),
		OS:      runtime.GOOS,
		Arch:    runtime.GOARCH,
		Kernel:  probeKernel(),
	}
	out := cmd.OutOrStdout()
	if o.g.format == "json" {
		enc := json.NewEncoder(out)
		enc.SetIndent("", "  ")
		return enc.Encode(v)
	}
	rows := [][2]string{
		{"strata", v.Version},
		{"go", v.Go + " " + v.OS + "/" + v.Arch},
		{"kernel", v.Kernel.Release},
		{"overlayfs", yesNo(v.Kernel.Overlay)},
		{"fuse", yesNo(v.Kernel.FUSE)},
	}
	if len(v.Kernel.Probed) == 0 {
		rows = append(rows, [2]string{"overlay features", "not probed"})
	}
	for _, f := range v.Kernel.Probed {
		rows = append(rows, [2]string{"overlay " + f.Name, yesNo(f.Supported)})
	}
	w := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	for _, r := range rows {
		if _, err := fmt.Fprintf(w, "%s:\t%s\n", r[0], r[1]); err != nil {
			return err
		}
	}
	if err := w.Flush(); err != nil {
		return err
	}
	for _, n := range v.Kernel.Notes {
		o.g.debugf(cmd, "%s", n)
	}
	return nil
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}
