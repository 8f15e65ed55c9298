package web

import (
	"html/template"
	"net/url"
	"strconv"
	"strings"

	"canhazgpu/internal/clusterview"
)

// The overview's grid (a section per node, a cell per GPU) is most of the
// page: 8,000 cells on a cluster of 1,000 nodes. html/template would
// escape every field of every cell through reflection; grid writes it
// directly, escaping each value the store or a GPU scan gave (user and
// process names are anyone's input) for where it goes: HTML text and
// quoted attributes by attr, the node's name in a path by url.PathEscape
// first. TestGridIsTheTemplate keeps it equal to the template it stands
// for.
func grid(nodes []clusterview.Node) template.HTML {
	if len(nodes) == 0 {
		return "<p>No GPUs match.</p>"
	}
	var b strings.Builder
	b.Grow(gridSize(nodes))
	for i := range nodes {
		writeNode(&b, &nodes[i])
	}
	return template.HTML(b.String())
}

// gridSize is about what the grid of nodes takes, so that the page is
// written into one buffer, grown once.
func gridSize(nodes []clusterview.Node) int {
	n := 0
	for i := range nodes {
		n += 120 + 300*len(nodes[i].GPUs)
	}
	return n
}

func writeNode(b *strings.Builder, n *clusterview.Node) {
	name := attr(n.Node)
	path := attr(url.PathEscape(n.Node))
	b.WriteString("\n<section class=\"node")
	if n.Flagged() {
		b.WriteString(" flagged")
	}
	b.WriteString("\" data-node=\"" + name + "\">\n<h2><a href=\"/node/" + path + "\">" + name + "</a>")
	if n.Flagged() {
		b.WriteString(" <span class=\"badge\">flagged</span>")
	}
	if len(n.Queue) > 0 {
		b.WriteString(" <span class=\"badge\">" + strconv.Itoa(len(n.Queue)) + " waiting</span>")
	}
	b.WriteString("</h2>\n<ul class=\"gpus\">")
	for i := range n.GPUs {
		g := &n.GPUs[i]
		state := attr(g.State())
		holder := attr(strings.Join(g.Holder(), ", "))
		uuid := attr(g.UUID)
		index := strconv.Itoa(g.Index)
		b.WriteString("\n<li class=\"gpu s-" + state + "\" data-state=\"" + state + "\" data-user=\"" + holder +
			"\" data-uuid=\"" + uuid + "\"><a href=\"/node/" + path + "#gpu-" + index + "\" title=\"" + uuid + "\"><b>" +
			index + "</b> " + state + " <span class=\"user\">" + holder + "</span>")
		if pids := pidsOf(*g); pids != "" {
			b.WriteString(" <span class=\"pids\">" + attr(pids) + "</span>")
		}
		b.WriteString("</a></li>")
	}
	b.WriteString("\n</ul>\n</section>\n")
}

// attrEscaper escapes what html/template escapes in HTML text and quoted
// attribute values, the same way.
var attrEscaper = strings.NewReplacer("\x00", "\uFFFD", `"`, "&#34;", "&", "&amp;", "'", "&#39;", "+", "&#43;", "<", "&lt;", ">", "&gt;")

func attr(s string) string { return attrEscaper.Replace(s) }
