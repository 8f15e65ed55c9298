package cli

import (
	"context"
	"encoding/json"
	"io"
	"os"
	"os/signal"
	"syscall"

	"canhazgpu/allocator"
	"canhazgpu/allocator/gpu"
	"canhazgpu/internal/clusterview"
	"canhazgpu/internal/config"
	"canhazgpu/internal/localnode"
	"canhazgpu/internal/metrics"
	"canhazgpu/internal/web"
)

func webCommand() *command {
	c := web.Config{}
	fs := newFlagSet("web")
	fs.StringVar(&c.Listen, "listen", web.DefaultListen, "serve on `HOST:PORT`; any address but loopback needs TLS and --auth-file, or --insecure")
	fs.StringVar(&c.TLSCert, "tls-cert", "", "serve HTTPS with the certificate in this PEM `file`")
	fs.StringVar(&c.TLSKey, "tls-key", "", "the private key of --tls-cert, a PEM `file`")
	fs.StringVar(&c.AuthFile, "auth-file", "", "ask for a user and password from this `file` of NAME:BCRYPT-HASH lines")
	fs.BoolVar(&c.Insecure, "insecure", false, "serve a non-loopback address without TLS and authentication (logged as a warning)")
	return &command{
		name:  "web",
		usage: "canhazgpu web [--listen HOST:PORT] [--tls-cert FILE --tls-key FILE --auth-file FILE] [--insecure]",
		short: "Serve a read-only dashboard of every node, its JSON API and Prometheus metrics",
		long: `Pages of the whole cluster from the store: the overview (every GPU of every
node coloured by state, filtered by node and user), one page per node (the
status rows, the queue, the health check's findings) and the usage report
with a chart and CSV and JSON downloads. /api/v1/ serves the documents of
status --json --all-nodes, queue --json and report --json; /metrics the
same state in the Prometheus text format. Nothing it serves changes the
store, and where the site set redis.web_username and
redis.web_password_file it reads the store with that credential only (the
read-only monitor role). It listens on this machine only unless told
otherwise, and another address needs TLS and an authentication file, or
--insecure.`,
		examples: []string{
			"canhazgpu web",
			"canhazgpu web --listen 0.0.0.0:8808 --tls-cert /etc/canhazgpu/web.crt --tls-key /etc/canhazgpu/web.key --auth-file /etc/canhazgpu/web.users",
		},
		flags: fs,
		run: func(ctx context.Context, inv *invocation, args []string) error {
			if err := noArgs("web", args); err != nil {
				return err
			}
			if err := c.Check(); err != nil {
				return &usageError{err}
			}
			cfg, node, err := inv.openWebNode(ctx)
			if err != nil {
				return err
			}
			defer node.Close()
			ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
			defer stop()
			return web.Serve(ctx, c, &webSource{cfg: cfg, node: node}, inv.env.Stderr, nil)
		},
	}
}

// openWebNode opens the store for the dashboard, which only reads. Where
// the site named the dashboard's credential (redis.web_username and
// redis.web_password_file: the monitor role, which Redis lets read and
// nothing else), it is the only one used, whoever runs the dashboard;
// else the caller's, as for any command.
func (inv *invocation) openWebNode(ctx context.Context) (*config.Config, *localnode.Node, error) {
	cfg, err := inv.settings()
	if err != nil {
		return nil, nil, err
	}
	switch r := &cfg.Redis; {
	case r.WebUsername != "" || r.WebPasswordFile != "":
		// The store's opener reads the file, as it does any password file.
		r.Username, r.PasswordFile, r.Password = r.WebUsername, r.WebPasswordFile, ""
	case !inv.env.User.Root():
		if err := useCLICredential(cfg, inv.env.CLICredential); err != nil {
			return nil, nil, err
		}
	}
	node, err := localnode.Open(ctx, cfg)
	if err != nil {
		return nil, nil, err
	}
	node.MayRegister = false
	return cfg, node, nil
}

// webSource reads the store for the dashboard through the builders of
// status --all-nodes, queue and report, so the API serves their documents.
type webSource struct {
	cfg  *config.Config
	node *localnode.Node
}

// Cluster is one read of every node (one round trip however many nodes,
// once the first read has learnt the registry; see store.Snapshots): the
// status document, and each node's queue document from the same
// snapshots.
func (s *webSource) Cluster(ctx context.Context) (*web.Docs, error) {
	devs, scanErr := s.node.Devices(ctx, gpu.ReadUtilization)
	snaps, err := s.node.LookAll(ctx, devs)
	if err != nil {
		return nil, err
	}
	return clusterDocs(viewAllNodes(snaps, s.cfg.Node, devs, scanErr == nil, s.cfg.GPU.MemoryThresholdMB), snaps)
}

// clusterDocs are the status document of the views and the queue
// document of each snapshot.
func clusterDocs(views []nodeView, snaps []*allocator.Snapshot) (*web.Docs, error) {
	status, err := json.Marshal(allNodesDocOf(views))
	if err != nil {
		return nil, err
	}
	docs := &web.Docs{Status: status, Queues: make(map[string][]byte, len(snaps))}
	for _, snap := range snaps {
		if docs.Queues[snap.Node], err = json.Marshal(queueDocOf(snap)); err != nil {
			return nil, err
		}
	}
	return docs, nil
}

// writePrometheus prints what /metrics serves, for the nodes viewed.
func writePrometheus(w io.Writer, views []nodeView, snaps []*allocator.Snapshot) error {
	docs, err := clusterDocs(views, snaps)
	if err != nil {
		return err
	}
	c, err := clusterview.Decode(docs.Status, docs.Queues)
	if err != nil {
		return err
	}
	return metrics.Write(w, c)
}

// Report is report --json --days days.
func (s *webSource) Report(ctx context.Context, days int) ([]byte, error) {
	rep, err := reportOf(ctx, s.node.Store, days)
	if err != nil {
		return nil, err
	}
	return json.Marshal(rep.json())
}
