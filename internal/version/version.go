// Package version holds what `make build` stamps into every program.
package version

// Set with -ldflags "-X canhazgpu/internal/version.Version=…" at build time.
var (
	Version = "dev"
	Commit  = "unknown"
	Date    = "unknown"
)

// String is the one-line form programs print.
func String() string {
	return Version + " (commit " + Commit + ", built " + Date + ")"
}
