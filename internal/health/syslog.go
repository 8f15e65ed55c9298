package health

import "canhazgpu/internal/syslogline"

// logReport sends one syslog line per violation, settled change, idle
// warning or release, drain, undrain and node comment. Under Slurm the check's output is seen only
// when it fails (slurmd does not log a successful HealthCheckProgram), so
// without these lines what it settled and why it drained show nowhere.
// A run with nothing to tell sends nothing: the check runs every few
// minutes on every node.
func (c *check) logReport(rep *Report) {
	if len(rep.Violations)+len(rep.Settled)+len(rep.Idle)+len(rep.Actions) == 0 {
		return // spares opening the socket
	}
	sys := syslogline.Open(c.deps.SyslogPath, "canhazgpu-healthcheck")
	defer sys.Close()
	for _, v := range rep.Violations {
		sys.Warning("problem: " + v.Message)
	}
	for _, s := range rep.Settled {
		switch s.What {
		case "unsettled", "unrestored":
			sys.Warning(s.What + ": " + s.Message)
		default:
			sys.Info("settled: " + s.Message)
		}
	}
	for _, f := range rep.Idle {
		if f.What == IdleReleased {
			sys.Info("idle: " + f.Message)
		} else {
			sys.Warning("idle: to " + f.User + ": " + f.Message)
		}
	}
	for _, a := range rep.Actions {
		switch a.What {
		case "drain":
			sys.Warning(a.What + ": " + a.Message)
		case "undrain", "comment":
			sys.Info(a.What + ": " + a.Message)
		case "kill", "kill_limited":
			sys.Warning(a.What + ": " + a.Message)
		case "notify", "exec":
			sys.Info(a.What + ": " + a.Message)
		}
	}
}
