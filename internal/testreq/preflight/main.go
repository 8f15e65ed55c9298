// Command preflight lists, before make test's long run, everything the
// machine lacks for it, and fails if anything is missing.
package main

import (
	"os"

	"canhazgpu/internal/testreq"
)

func main() {
	if !testreq.Preflight(testreq.Here, os.Stderr) {
		os.Exit(1)
	}
}
