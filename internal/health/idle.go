package health

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"canhazgpu/allocator"
	"canhazgpu/allocator/gpu"
	"canhazgpu/allocator/store"
	"canhazgpu/allocator/usage"
	"canhazgpu/internal/config"
)

// The values of IdleFinding.What.
const (
	IdleWarned   = "warned"   // the owner was told the reservation is idle
	IdleReleased = "released" // a manual reservation idle too long was ended
)

// IdleFinding is one idle interactive reservation (all the GPUs of one
// grant) the check warned about or released this run.
type IdleFinding struct {
	What        string         `json:"what"` // IdleWarned or IdleReleased
	Kind        allocator.Kind `json:"kind"` // run or manual
	User        string         `json:"user"`
	GPUs        []int          `json:"gpus"`
	IdleSeconds int64          `json:"idle_seconds"`
	Message     string         `json:"message"`
}

// idleStampEvery is the idle clock's granularity. The run's snapshot
// restarts the clock of a grant in use (in the same round trip, see
// seenIdle) only once the clock is this old, so runs closer together than
// this write nothing. A grant that turns idle is then judged from a last
// use up to this much older than the last run that saw it in use: its
// warning and release come at most this much early.
const idleStampEvery = time.Minute

// seenIdle names the GPUs the scan saw idle, by gpuActive's rule. The
// run's snapshot restarts the idle clock of every interactive grant with
// another GPU: one in use, or one the scan did not see.
func seenIdle(devs []gpu.Device, cfg *config.Config) []string {
	var out []string
	for _, d := range devs {
		g := usage.GPU{Seen: true, Busy: d.MemoryUsedMB >= cfg.GPU.MemoryThresholdMB, Utilization: d.Utilization,
			Processes: d.Processes}
		if !gpuActive(g, cfg) {
			out = append(out, d.UUID)
		}
	}
	return out
}

// idleGrant is one interactive grant's GPUs on this node: a reservation
// is idle or in use as a whole.
type idleGrant struct {
	res     []allocator.Reservation // by GPU index
	indices []int
	active  bool
}

// since is when the grant's idle spell began: its latest sign of use on
// any GPU.
func (g idleGrant) since() time.Time {
	var t time.Time
	for _, r := range g.res {
		if s := r.IdleSince(); s.After(t) {
			t = s
		}
	}
	return t
}

// warned: the owner was told about the current spell of every GPU.
func (g idleGrant) warned() bool {
	return !slices.ContainsFunc(g.res, func(r allocator.Reservation) bool { return !r.IdleWarned.Equal(r.IdleSince()) })
}

// gpuActive: a process holds memory over the threshold, or the GPU is
// busy by the driver's figure. A GPU not seen, or whose utilisation the
// driver does not say, is never idle: reclaiming on a guess would take
// away GPUs someone uses.
func gpuActive(g usage.GPU, cfg *config.Config) bool {
	if !g.Seen || g.Busy || !g.Utilization.Below(cfg.Idle.UtilizationBelow) {
		return true
	}
	return slices.ContainsFunc(g.Processes, func(p gpu.Process) bool { return p.UsedMemoryMB >= cfg.GPU.MemoryThresholdMB })
}

// judgeIdle decides, at now, what to do about the interactive
// reservations among gpus: warn the owners of those idle past [idle]
// *_warn_after (once per idle spell), release manual ones idle past
// manual_release_after. Those in use had their clock restarted by the
// run's snapshot. Batch reservations are the scheduler's and never
// judged. It changes nothing itself: the update is applied in one store
// operation, and the findings are what that operation is asked to do.
func judgeIdle(gpus []usage.GPU, cfg *config.Config, now time.Time) ([]IdleFinding, store.IdleUpdate) {
	grants := map[int64]*idleGrant{}
	var order []int64
	for _, g := range gpus {
		r := g.Reservation
		if r == nil || r.Kind.Batch() || r.Queued || !r.Active(now) {
			continue
		}
		gr, ok := grants[r.Token]
		if !ok {
			gr = &idleGrant{}
			grants[r.Token] = gr
			order = append(order, r.Token)
		}
		gr.res = append(gr.res, *r)
		gr.indices = append(gr.indices, g.Index)
		gr.active = gr.active || gpuActive(g, cfg)
	}
	var out []IdleFinding
	var upd store.IdleUpdate
	for _, token := range order {
		gr := grants[token]
		if gr.active {
			continue
		}
		r := gr.res[0]
		since := gr.since()
		idle := now.Sub(since)
		f := IdleFinding{Kind: r.Kind, User: r.User, GPUs: gr.indices, IdleSeconds: int64(idle / time.Second)}
		warnAfter, releaseAfter := cfg.Idle.RunWarnAfter, time.Duration(0)
		if r.Kind == allocator.KindManual {
			warnAfter, releaseAfter = cfg.Idle.ManualWarnAfter, cfg.Idle.ManualReleaseAfter
		}
		switch {
		case releaseAfter > 0 && idle >= releaseAfter:
			f.What, f.Message = IdleReleased, releasedMessage(f, cfg)
			// Each reservation as the decision saw it: the store keeps
			// any whose clock has moved since.
			upd.Release = append(upd.Release, gr.res...)
		case idle >= warnAfter && !gr.warned():
			f.What, f.Message = IdleWarned, warnedMessage(f, cfg, releaseAfter-idle)
			upd.Warned = append(upd.Warned, gr.res...)
		default:
			continue
		}
		out = append(out, f)
	}
	return out, upd
}

func idleGPUs(f IdleFinding) string {
	names := make([]string, len(f.GPUs))
	for i, g := range f.GPUs {
		names[i] = strconv.Itoa(g)
	}
	if len(names) == 1 {
		return "GPU " + names[0]
	}
	return "GPUs " + strings.Join(names, ", ")
}

// idleWhy says what idle means here, so the owner can tell a notebook
// that holds little memory from one that computes.
func idleWhy(cfg *config.Config) string {
	return fmt.Sprintf("no process above %d MB and under %d%% utilisation", cfg.GPU.MemoryThresholdMB, cfg.Idle.UtilizationBelow)
}

func warnedMessage(f IdleFinding, cfg *config.Config, left time.Duration) string {
	head := fmt.Sprintf("%s reservation of %s by %s on %s idle for %s (%s)", f.Kind, idleGPUs(f), f.User, cfg.Node,
		config.Duration(time.Duration(f.IdleSeconds)*time.Second), idleWhy(cfg))
	switch {
	case f.Kind == allocator.KindRun:
		return head + ": end the command when done, to let others use the GPUs"
	case left > 0:
		return head + fmt.Sprintf(": released in %s unless used or kept with 'canhazgpu reserve --keep-alive'",
			config.Duration((left+time.Minute-1).Truncate(time.Minute)))
	default:
		return head + ": release it with 'canhazgpu release' when done"
	}
}

func releasedMessage(f IdleFinding, cfg *config.Config) string {
	return fmt.Sprintf("released manual reservation of %s by %s on %s: idle for %s (%s), longer than [idle] manual_release_after %s",
		idleGPUs(f), f.User, cfg.Node, config.Duration(time.Duration(f.IdleSeconds)*time.Second), idleWhy(cfg),
		config.Duration(cfg.Idle.ManualReleaseAfter))
}

// idle applies judgeIdle's decisions in one store operation (none when
// there is nothing to write), then tells the owners. A release the store
// refused (the reservation was used, kept alive or ended meanwhile) is
// left out of the findings. Warnings go out only once recorded, so a
// store failure means a warning next run, never the same one twice.
func (c *check) idle(ctx context.Context, gpus []usage.GPU, now time.Time) ([]IdleFinding, []Action) {
	found, upd := judgeIdle(gpus, c.cfg, now)
	if upd.Empty() {
		return nil, nil
	}
	released, err := c.deps.Store.ApplyIdle(ctx, upd)
	if err != nil {
		return nil, []Action{{What: "error", Message: err.Error()}}
	}
	gone := map[int]bool{}
	for _, uuid := range released {
		if i := slices.IndexFunc(gpus, func(g usage.GPU) bool { return g.UUID == uuid }); i >= 0 {
			gone[gpus[i].Index] = true
		}
	}
	var out []IdleFinding
	var acts []Action
	for _, f := range found {
		if f.What == IdleReleased && !slices.ContainsFunc(f.GPUs, func(i int) bool { return gone[i] }) {
			continue
		}
		out = append(out, f)
		// The owner's terminals, through the notify step's door; the
		// report's syslog lines name the owner for one who is not there.
		if _, err := c.notify(f.User, f.Message); err != nil {
			acts = append(acts, Action{What: "error", Message: "telling " + f.User + ": " + err.Error()})
		}
	}
	slices.SortStableFunc(out, func(a, b IdleFinding) int { return cmp.Compare(a.GPUs[0], b.GPUs[0]) })
	return out, acts
}
