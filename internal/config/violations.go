package config

import (
	"fmt"
	"slices"
	"strings"
	"time"
)

// ViolationsConfig says what canhazgpu-healthcheck does to the people
// behind a violation, on top of recording it: the steps in Actions, each
// once its grace time since the violation was first seen has passed, then
// [health] action (flag or drain) after MarkAfter. Nothing in Actions is
// today's behaviour: violations are recorded and the node marked, no more.
type ViolationsConfig struct {
	Actions       []string      // in order, from ViolationActions
	NotifyAfter   time.Duration // 0: at once
	ExecAfter     time.Duration
	KillAfter     time.Duration
	MarkAfter     time.Duration // before [health] action counts a violation
	RenotifyEvery time.Duration // a violation is told again at most this often
	KillWait      time.Duration // between SIGTERM and SIGKILL
	KillsPerHour  int           // processes killed on this node per hour, at most
	// KillExemptUsers and KillExemptCommands (executables, by absolute
	// path) are never killed; root never is.
	KillExemptUsers    []string
	KillExemptCommands []string
	Exec               string // the site command of the exec action
	ExecTimeout        time.Duration
	UtmpFile           string // the login sessions notify writes to
}

// The actions of [violations] actions.
const (
	ViolationNotify = "notify"
	ViolationExec   = "exec"
	ViolationKill   = "kill"
)

// ViolationActions are the accepted actions, in their usual order.
var ViolationActions = []string{ViolationNotify, ViolationExec, ViolationKill}

func violationsDefaults() ViolationsConfig {
	return ViolationsConfig{
		KillAfter:     10 * time.Minute,
		RenotifyEvery: time.Hour,
		KillWait:      10 * time.Second,
		KillsPerHour:  10,
		ExecTimeout:   10 * time.Second,
		UtmpFile:      "/run/utmp",
	}
}

// After is the grace time of an action of ViolationActions.
func (v ViolationsConfig) After(action string) time.Duration {
	switch action {
	case ViolationNotify:
		return v.NotifyAfter
	case ViolationExec:
		return v.ExecAfter
	default:
		return v.KillAfter
	}
}

// Enabled: the site turned the action on.
func (v ViolationsConfig) Enabled(action string) bool { return slices.Contains(v.Actions, action) }

func checkViolationAction(s string) error {
	if !slices.Contains(ViolationActions, s) {
		return fmt.Errorf("must list actions out of %s, got %q", strings.Join(ViolationActions, ", "), s)
	}
	return nil
}

// graceTime is a wait that may be zero: "0", 0 or "" is at once.
func graceTime(name string, field func(*Config) *time.Duration) setting {
	parse := func(s string) (time.Duration, error) {
		if s == "" || s == "0" {
			return 0, nil
		}
		d, err := ParseDuration(s)
		if err != nil {
			return 0, fmt.Errorf("%w; or \"0\" for at once", err)
		}
		return d, nil
	}
	fromTOML := func(raw any) (time.Duration, error) {
		if n, ok := raw.(int64); ok && n == 0 {
			return 0, nil // notify_after = 0
		}
		s, ok := raw.(string)
		if !ok {
			return 0, fmt.Errorf("must be a duration string such as \"10m\" or \"0\", got %s", describe(raw))
		}
		return parse(s)
	}
	return define(name, field, fromTOML, parse, nil)
}

// checkViolations: each action once, escalating (an action's grace time is
// at least that of the one before it), and exec with a command to run.
func (l *loader) checkViolations() error {
	v := l.cfg.Violations
	for i, a := range v.Actions {
		if slices.Contains(v.Actions[:i], a) {
			return l.errorAt("violations.actions", fmt.Sprintf("lists %q twice: each action runs once, in the listed order", a))
		}
		if i > 0 && v.After(a) < v.After(v.Actions[i-1]) {
			prev := v.Actions[i-1]
			key := "violations." + a + "_after"
			if _, set := l.origin[key]; !set {
				key = "violations." + prev + "_after"
			}
			return l.errorAt(key, fmt.Sprintf("violations.%s_after (%s) must not be shorter than violations.%s_after (%s): actions escalate in the order of violations.actions",
				a, Duration(v.After(a)), prev, Duration(v.After(prev))))
		}
	}
	if v.Enabled(ViolationExec) && v.Exec == "" {
		return l.errorAt("violations.actions", `"exec" needs violations.exec, the absolute path of the command to run`)
	}
	return nil
}
