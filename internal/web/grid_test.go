package web

import (
	"html/template"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"canhazgpu/internal/clusterview"
)

// gridTemplate is the overview's grid as html/template wrote it before
// grid replaced it: the reference grid's output is held to.
const gridTemplate = `{{range .}}
<section class="node{{if .Flagged}} flagged{{end}}" data-node="{{.Node}}">
<h2><a href="/node/{{.Node}}">{{.Node}}</a>{{if .Flagged}} <span class="badge">flagged</span>{{end}}{{with .Queue}} <span class="badge">{{len .}} waiting</span>{{end}}</h2>
<ul class="gpus">{{$n := .Node}}{{range .GPUs}}
<li class="gpu s-{{.State}}" data-state="{{.State}}" data-user="{{join .Holder}}" data-uuid="{{.UUID}}"><a href="/node/{{$n}}#gpu-{{.Index}}" title="{{.UUID}}"><b>{{.Index}}</b> {{.State}} <span class="user">{{join .Holder}}</span>{{with pidsOf .}} <span class="pids">{{.}}</span>{{end}}</a></li>{{end}}
</ul>
</section>
{{else}}<p>No GPUs match.</p>{{end}}`

func referenceGrid(t *testing.T, nodes []clusterview.Node) string {
	t.Helper()
	tmpl := template.Must(template.New("").Funcs(template.FuncMap{
		"join": func(s []string) string { return strings.Join(s, ", ") }, "pidsOf": pidsOf}).Parse(gridTemplate))
	var b strings.Builder
	require.NoError(t, tmpl.Execute(&b, nodes))
	return b.String()
}

// TestGridIsTheTemplate: the grid writer gives the template's bytes for
// every state a cell can show, and escapes hostile names (a process
// name is whatever its owner wrote) as html/template does.
func TestGridIsTheTemplate(t *testing.T) {
	gpu := 3
	mem := int64(900)
	nodes := []clusterview.Node{
		{Node: "gpu01", Flags: []clusterview.Flag{{Message: "drained"}}, Queue: []clusterview.Entry{{ID: "q1"}, {ID: "q2"}}, GPUs: []clusterview.GPU{
			{Index: 0, UUID: "GPU-0", Status: "available"},
			{Index: 1, UUID: "GPU-1", Status: "unreserved", Users: []string{"bob"}, MemoryUsedMB: &mem,
				Processes: []clusterview.Process{{PID: 4242, Name: "python3", User: "bob"}, {PID: 7}}},
			{Index: 2, UUID: "GPU-2", Reservation: &clusterview.Reservation{Kind: "slurm", User: "carol", JobID: "17"}},
			{Index: 3, UUID: "GPU-3", Reservation: &clusterview.Reservation{Kind: "manual", User: "alice"}, ForeignUsers: []string{"dave"}},
			{Index: 4, UUID: "GPU-4", Reservation: &clusterview.Reservation{Kind: "run", User: "erin", Queued: true}},
		}},
		{Node: "gpu02", Flags: []clusterview.Flag{{GPU: &gpu, UUID: "GPU-x", Message: "one GPU"}}, GPUs: []clusterview.GPU{
			{Index: 0, UUID: "GPU-y", Reservation: &clusterview.Reservation{Kind: "pbs", User: "frank", JobID: "3.pbs"}}}},
	}
	require.Equal(t, referenceGrid(t, nodes), string(grid(nodes)))
	require.Equal(t, referenceGrid(t, nil), string(grid(nil)))

	hostile := `<script>alert("x")</script> & 'y' +1`
	evil := []clusterview.Node{{Node: "gpu%03", GPUs: []clusterview.GPU{{Index: 0, UUID: "GPU-0", Status: "unreserved",
		Users: []string{hostile}, Processes: []clusterview.Process{{PID: 1, Name: hostile, User: hostile}}}}}}
	got := string(grid(evil))
	require.NotContains(t, got, "<script>")
	require.NotContains(t, got, `"x"`)
	require.Contains(t, got, `data-user="&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt; &amp; &#39;y&#39; &#43;1"`)
	require.Contains(t, got, `<a href="/node/gpu%2503">`, "the node's name is escaped in the path")
	// Only there does grid differ: html/template kept "%03" as if it were
	// an escape already, a link to another name.
	require.Equal(t, strings.ReplaceAll(referenceGrid(t, evil), `href="/node/gpu%03`, `href="/node/gpu%2503`), got)
}
