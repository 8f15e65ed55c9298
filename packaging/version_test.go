package packaging

import (
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// pkgVersion runs package.sh's own pkg_version function on a git describe
// output.
func pkgVersion(t *testing.T, describe string) string {
	t.Helper()
	script, err := os.ReadFile("package.sh")
	require.NoError(t, err)
	fn := regexp.MustCompile(`(?ms)^pkg_version\(\) \{$.*?^\}$`).Find(script)
	require.NotNil(t, fn, "package.sh defines pkg_version")
	out, err := exec.Command("bash", "-c", string(fn)+"\npkg_version \"$1\"", "bash", describe).CombinedOutput()
	require.NoError(t, err, string(out))
	return string(out)
}

// Untagged builds, whatever their hash starts with, sort below every
// release in dpkg's order; releases and the commits after them sort as
// they were made.
func TestPackageVersions(t *testing.T) {
	dpkg, err := exec.LookPath("dpkg")
	require.NoError(t, err, "dpkg is missing: the versions are Debian's")
	for describe, want := range map[string]string{
		"v1.2.3":                  "1.2.3",
		"v1.2.3-4-gabc1234":       "1.2.3+4.gabc1234",
		"v1.2.3-4-gabc1234-dirty": "1.2.3+4.gabc1234.dirty",
		"abc1234":                 "0.0.0~gitabc1234",
		"65c9700":                 "0.0.0~git65c9700",
		"1234567-dirty":           "0.0.0~git1234567+dirty",
		"dev":                     "0.0.0~gitdev",
	} {
		require.Equal(t, want, pkgVersion(t, describe), describe)
	}

	lower := func(a, b string) {
		t.Helper()
		out, err := exec.Command(dpkg, "--compare-versions", a, "lt", b).CombinedOutput()
		require.NoError(t, err, "dpkg: %s should sort below %s %s", a, b, strings.TrimSpace(string(out)))
	}
	for _, untagged := range []string{"abc1234", "65c9700", "9999999-dirty", "dev"} {
		for _, release := range []string{"v0.0.1", "v0.1.0", "v1.2.3"} {
			lower(pkgVersion(t, untagged), pkgVersion(t, release))
		}
	}
	ordered := []string{"v1.2.3", "v1.2.3-4-gabc1234", "v1.2.3-12-g0123456", "v1.2.4", "v1.10.0"}
	for i := 1; i < len(ordered); i++ {
		lower(pkgVersion(t, ordered[i-1]), pkgVersion(t, ordered[i]))
	}
}
