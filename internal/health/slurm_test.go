package health

import (
	"testing"

	"github.com/stretchr/testify/require"

	"canhazgpu/internal/slurm"
)

func TestPlanSlurm(t *testing.T) {
	const want = "canhazgpu: GPU 1 used by bob (pid 4242) without reservation"
	tests := []struct {
		name    string
		action  string
		info    slurm.NodeInfo
		reason  string
		updates [][]string
		skip    string
	}{
		{name: "drain an idle node", action: ActionDrain, info: slurm.NodeInfo{State: []string{"IDLE"}}, reason: want,
			updates: [][]string{{"State=DRAIN", "Reason=" + want}}},
		{name: "already drained for this", action: ActionDrain, info: slurm.NodeInfo{State: []string{"IDLE", "DRAIN"}, Reason: want}, reason: want},
		{name: "drained by us for something else: new reason", action: ActionDrain,
			info: slurm.NodeInfo{State: []string{"MIXED", "DRAIN"}, Reason: "canhazgpu: GPU 0 used by eve (pid 1) without reservation"}, reason: want,
			updates: [][]string{{"State=DRAIN", "Reason=" + want}}},
		{name: "drained by someone else", action: ActionDrain, info: slurm.NodeInfo{State: []string{"IDLE", "DRAIN"}, Reason: "maintenance"},
			reason: want, skip: `node already has reason "maintenance": left as it is`},
		{name: "a resumed node's kept reason is no mark (Slurm 24.11)", action: ActionDrain,
			info: slurm.NodeInfo{State: []string{"IDLE"}, Reason: "Prolog error"}, reason: want,
			updates: [][]string{{"State=DRAIN", "Reason=" + want}}},
		{name: "down node is left alone", action: ActionDrain, info: slurm.NodeInfo{State: []string{"DOWN"}}, reason: want, skip: "node is DOWN: not drained"},
		{name: "undrain our drain", action: ActionDrain, info: slurm.NodeInfo{State: []string{"IDLE", "DRAIN"}, Reason: want},
			updates: [][]string{{"State=UNDRAIN"}}},
		{name: "never undrain another reason", action: ActionDrain, info: slurm.NodeInfo{State: []string{"IDLE", "DRAIN"}, Reason: "NHC: check_fs_mount failed"}},
		{name: "a reason mentioning us in the middle is not ours", action: ActionDrain,
			info: slurm.NodeInfo{State: []string{"IDLE", "DRAIN"}, Reason: "bad gpu, see canhazgpu: later"}},
		{name: "clean and not drained", action: ActionDrain, info: slurm.NodeInfo{State: []string{"IDLE"}}},
		{name: "flag sets the comment", action: ActionFlag, info: slurm.NodeInfo{State: []string{"IDLE"}}, reason: want,
			updates: [][]string{{"Comment=" + want}}},
		{name: "flag keeps an equal comment", action: ActionFlag, info: slurm.NodeInfo{State: []string{"IDLE"}, Comment: want}, reason: want},
		{name: "flag keeps someone else's comment", action: ActionFlag, info: slurm.NodeInfo{State: []string{"IDLE"}, Comment: "rack 4"},
			reason: want, skip: `node already has comment "rack 4": left as it is`},
		{name: "flag never drains", action: ActionFlag, info: slurm.NodeInfo{State: []string{"IDLE"}, Comment: "canhazgpu: old"}, reason: want,
			updates: [][]string{{"Comment=" + want}}},
		{name: "clean clears our comment and our drain", action: ActionFlag,
			info:    slurm.NodeInfo{State: []string{"IDLE", "DRAIN"}, Reason: want, Comment: want},
			updates: [][]string{{"State=UNDRAIN"}, {"Comment="}}},
		{name: "clean keeps someone else's comment", action: ActionFlag, info: slurm.NodeInfo{State: []string{"IDLE"}, Comment: "rack 4"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var updates [][]string
			skip := ""
			for _, u := range planSlurm(tc.action, tc.info, tc.reason) {
				if len(u.fields) == 0 {
					skip = u.msg
					continue
				}
				updates = append(updates, u.fields)
			}
			require.Equal(t, tc.updates, updates)
			require.Equal(t, tc.skip, skip)
		})
	}
}
