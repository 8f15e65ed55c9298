// Command manpage writes one man page per canhazgpu program from the
// program's own --help output, so the pages never say something the help
// text does not.
//
//	go run ./packaging/manpage -out DIR -version V -date 2006-01-02 BIN:SECTION...
//
// The NAME line of each page is the first sentence of the program's package
// documentation ("Command canhazgpu-prolog reserves …"), read with go list
// from the module in the current directory. A program whose --help prints
// no "Usage:" line gets a minimal page from that sentence alone.
package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "manpage:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	fs := flag.NewFlagSet("manpage", flag.ContinueOnError)
	out := fs.String("out", "", "directory for the pages (man1/, man8/, … are created in it)")
	version := fs.String("version", "dev", "version shown in the page footer")
	date := fs.String("date", "", "date shown in the page footer, YYYY-MM-DD")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *out == "" || fs.NArg() == 0 {
		return errors.New("usage: manpage -out DIR [-version V] [-date YYYY-MM-DD] BIN:SECTION (one or more)")
	}
	docs, err := commandDocs()
	if err != nil {
		return err
	}
	var refs []string
	for _, arg := range fs.Args() {
		bin, section, ok := strings.Cut(arg, ":")
		if !ok || section == "" || strings.ContainsAny(section, "/ ") {
			return fmt.Errorf("bad program %q: want BIN:SECTION, e.g. bin/canhazgpu:1", arg)
		}
		refs = append(refs, filepath.Base(bin)+"("+section+")")
	}
	for i, arg := range fs.Args() {
		bin, section, _ := strings.Cut(arg, ":")
		name := filepath.Base(bin)
		p := page{
			Name:    name,
			Section: section,
			Version: *version,
			Date:    *date,
			Summary: docs[name],
			Help:    help(bin),
			SeeAlso: slices.Delete(slices.Clone(refs), i, i+1),
		}
		if p.Help != "" {
			for _, sub := range subcommands(p.Help) {
				if h := help(bin, sub); h != "" {
					p.Subcommands = append(p.Subcommands, subcommand{Name: sub, Help: h})
				}
			}
		} else {
			fmt.Fprintf(os.Stderr, "manpage: %s prints no usage for --help: writing a minimal page\n", name)
		}
		dir := filepath.Join(*out, "man"+section)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(dir, name+"."+section), []byte(p.Render()), 0o644); err != nil {
			return err
		}
	}
	return nil
}

// help runs `bin args... --help` and returns its output when it looks like
// help text (has a "Usage:" line), else "". The exit status is ignored:
// some flag parsers exit 2 after printing help.
func help(bin string, args ...string) string {
	cmd := exec.Command(bin, append(args, "--help")...)
	// A clean environment: the page shows built-in defaults, not the
	// settings of whoever builds the package.
	cmd.Env = []string{"PATH=/usr/bin:/bin", "HOME=" + os.TempDir(), "LC_ALL=C.UTF-8"}
	out, _ := cmd.CombinedOutput()
	if !hasUsage(string(out)) {
		return ""
	}
	return string(out)
}

// commandDocs maps program names to the first sentence of their package
// documentation without the "Command NAME" prefix, for every main package
// of the module.
func commandDocs() (map[string]string, error) {
	out, err := exec.Command("go", "list", "-f", `{{if eq .Name "main"}}{{.Doc}}{{end}}`, "./...").Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return nil, fmt.Errorf("go list: %w: %s", err, ee.Stderr)
		}
		return nil, fmt.Errorf("go list: %w", err)
	}
	return parseDocs(string(out)), nil
}

func parseDocs(goList string) map[string]string {
	docs := map[string]string{}
	for line := range strings.SplitSeq(goList, "\n") {
		rest, ok := strings.CutPrefix(strings.TrimSpace(line), "Command ")
		if !ok {
			continue
		}
		name, sentence, ok := strings.Cut(rest, " ")
		if ok {
			docs[name] = strings.TrimSuffix(strings.TrimSpace(sentence), ".")
		}
	}
	return docs
}
