package command

import (
	"time"

	"github.com/spf13/cobra"

	"github.com/stratafs/strata/snapshot"
)

type infoOptions struct{ g *globalOptions }

func newInfoCommand(g *globalOptions) *cobra.Command {
	o := &infoOptions{g: g}
	return &cobra.Command{
		Use:               "info KEY",
		Short:             "Print a snapshot's info, usage and mounts as JSON",
		Long:              `Print everything the store knows about KEY as JSON (always): its info, the usage of its own layer and the mounts that assemble it. Opens the store read-only.`,
		Args:              exactArgs(1, "KEY"),
		ValidArgsFunction: completeKeys(g, 1),
		RunE:              func(cmd *cobra.Command, args []string) error { return o.run(cmd, args[0]) },
	}
}

// infoReport is the output of info.
type infoReport struct {
	Info struct {
		Key     string            `json:"key"`
		Kind    string            `json:"kind"`
		Parent  string            `json:"parent,omitempty"`
		Labels  map[string]string `json:"labels,omitempty"`
		Created time.Time         `json:"created"`
		Updated time.Time         `json:"updated"`
	} `json:"info"`
	Usage  usageEntry  `json:"usage"`
	Mounts []mountJSON `json:"mounts"`
}

// mountJSON is a snapshot.Mount in JSON.
type mountJSON struct {
	Type    string   `json:"type"`
	Source  string   `json:"source"`
	Options []string `json:"options"`
}

func toMountJSON(ms []snapshot.Mount) []mountJSON {
	out := make([]mountJSON, 0, len(ms))
	for _, m := range ms {
		out = append(out, mountJSON{m.Type, m.Source, m.Options})
	}
	return out
}

func (o *infoOptions) run(cmd *cobra.Command, key string) error {
	ctx := cmdContext(cmd)
	return o.g.withStore(true, func(s *snapshot.Store) error {
		i, err := s.Stat(ctx, key)
		if err != nil {
			return err
		}
		u, err := s.Usage(ctx, key)
		if err != nil {
			return err
		}
		ms, err := s.Mounts(ctx, key)
		if err != nil {
			return err
		}
		var r infoReport
		r.Info.Key, r.Info.Kind, r.Info.Parent, r.Info.Labels = i.Name, i.Kind.String(), i.Parent, i.Labels
		r.Info.Created, r.Info.Updated = i.Created, i.Updated
		r.Usage = usageEntry{Key: key, Size: u.Size, Inodes: u.Inodes}
		r.Mounts = toMountJSON(ms)
		return writeJSON(cmd.OutOrStdout(), r)
	})
}
