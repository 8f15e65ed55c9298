package cli

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode"

	"github.com/spf13/pflag"

	"canhazgpu/allocator"
	"canhazgpu/internal/config"
)

// The flag values check what they are given in Set and fail with a
// valueError; flagError turns pflag's wrapping of it into the one-line
// "invalid --flag "value": want ..." form every bad value gets.

// valueError says what a flag accepts.
type valueError struct{ accepted string }

func (e *valueError) Error() string { return "want " + e.accepted }

var durationAccepted = "a positive duration such as 30s, 30m, 2h, 1d, 0.5h or 1h30m (each unit once, largest first; at most " +
	config.Duration(config.MaxDuration).String() + ")"

// countValue is a whole number from 1 to max.
type countValue struct {
	n        int
	max      int
	accepted string
}

func (v *countValue) String() string {
	if v.n == 0 {
		return ""
	}
	return strconv.Itoa(v.n)
}
func (v *countValue) Type() string { return "int" }
func (v *countValue) Set(s string) error {
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 || n > v.max {
		return &valueError{v.accepted}
	}
	v.n = n
	return nil
}

// maxGPUs bounds --gpus before the node is asked how many it has.
const maxGPUs = 1024

func gpuCount() countValue {
	return countValue{max: maxGPUs, accepted: "a positive whole number of GPUs"}
}

// idsValue is a comma-separated list of GPU indices, each once.
type idsValue struct {
	ids []int
	raw string
}

func (v *idsValue) String() string { return v.raw }
func (v *idsValue) Type() string   { return "list" }
func (v *idsValue) Set(s string) error {
	bad := &valueError{"GPU indices separated by commas, each once, e.g. 0 or 0,2"}
	if strings.TrimSpace(s) == "" {
		return bad
	}
	var ids []int
	seen := map[int]bool{}
	for part := range strings.SplitSeq(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(part))
		if err != nil || n < 0 || n >= maxGPUs || seen[n] {
			return bad
		}
		seen[n] = true
		ids = append(ids, n)
	}
	v.ids, v.raw = ids, s
	return nil
}

// durationValue is a positive duration in the forms of config.ParseDuration.
type durationValue struct{ d time.Duration }

func (v *durationValue) String() string {
	if v.d == 0 {
		return ""
	}
	return config.Duration(v.d).String()
}
func (v *durationValue) Type() string { return "duration" }
func (v *durationValue) Set(s string) error {
	d, err := config.ParseDuration(s)
	if err != nil {
		return &valueError{durationAccepted}
	}
	v.d = d
	return nil
}

// waitForever is what a bare --wait sets: wait without a bound.
const waitForever = "forever"

// waitValue is --wait[=D]: join the queue, optionally giving up after D.
type waitValue struct {
	set   bool
	bound time.Duration // 0: no bound
}

func (v *waitValue) String() string {
	if !v.set || v.bound == 0 {
		return ""
	}
	return config.Duration(v.bound).String()
}
func (v *waitValue) Type() string { return "duration" }
func (v *waitValue) Set(s string) error {
	if s == waitForever {
		v.set, v.bound = true, 0
		return nil
	}
	d, err := config.ParseDuration(s)
	if err != nil {
		return &valueError{durationAccepted + ", or no value to wait as long as it takes"}
	}
	v.set, v.bound = true, d
	return nil
}

// noteValue is a short free text shown with the reservation.
type noteValue struct{ s string }

func (v *noteValue) String() string { return v.s }
func (v *noteValue) Type() string   { return "text" }
func (v *noteValue) Set(s string) error {
	if len(s) > allocator.MaxNoteLen || strings.ContainsFunc(s, unicode.IsControl) {
		return &valueError{fmt.Sprintf("one line of at most %d bytes", allocator.MaxNoteLen)}
	}
	v.s = s
	return nil
}

// userValue is an account name for --user.
type userValue struct{ s string }

func (v *userValue) String() string { return v.s }
func (v *userValue) Type() string   { return "name" }
func (v *userValue) Set(s string) error {
	if err := allocator.ValidateUser(s); err != nil {
		return &valueError{"an account name without commas or control characters"}
	}
	v.s = s
	return nil
}

// newFlagSet makes a flag set that reports errors instead of printing or
// exiting. It defines no help flag: pflag then answers -h and --help with
// pflag.ErrHelp, which Run turns into the help text.
func newFlagSet(name string) *pflag.FlagSet {
	fs := pflag.NewFlagSet(name, pflag.ContinueOnError)
	fs.Usage = func() {}
	fs.SetOutput(discard{})
	fs.SortFlags = false
	return fs
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }

// parseFlags parses args into fs like fs.Parse, but refuses a flag given
// twice: pflag lets the last value win, so `--gpus 1 --gpus 2` would take
// two GPUs and drop what was typed first without a word.
func parseFlags(fs *pflag.FlagSet, args []string) error {
	given := map[string]string{}
	return fs.ParseAll(args, func(f *pflag.Flag, value string) error {
		if first, seen := given[f.Name]; seen {
			return &repeatedFlagError{name: f.Name, first: first, again: value}
		}
		given[f.Name] = value
		return fs.Set(f.Name, value)
	})
}

// repeatedFlagError is a flag given twice, on one side of the command name
// or on both.
type repeatedFlagError struct{ name, first, again string }

func (e *repeatedFlagError) Error() string {
	return fmt.Sprintf("flag --%s given twice (%q, then %q): want each flag at most once", e.name, e.first, e.again)
}

// checkGlobalFlags judges the global flags once both sides of the command
// name are parsed (root: before it, global: after it). A flag on both sides
// is given twice. A flag given an empty value is refused: the settings take
// an empty value as "not set", so an empty --node would quietly become the
// hostname and an empty --config the default file.
func checkGlobalFlags(root, global *pflag.FlagSet) error {
	var err error
	global.VisitAll(func(after *pflag.Flag) {
		before := root.Lookup(after.Name)
		switch {
		case err != nil || before == nil:
		case before.Changed && after.Changed:
			err = &usageError{&repeatedFlagError{name: after.Name, first: before.Value.String(), again: after.Value.String()}}
		case before.Changed && before.Value.String() == "", after.Changed && after.Value.String() == "":
			err = badValue("--"+after.Name, "", "a non-empty value, or no --"+after.Name+" at all for the default")
		}
	})
	return err
}

// flagError rewrites a pflag parse error as a usage error naming the flag,
// the value and what is accepted.
func flagError(cmd string, fs *pflag.FlagSet, err error) error {
	var invalid *pflag.InvalidValueError
	var missing *pflag.ValueRequiredError
	var unknown *pflag.NotExistError
	var syntax *pflag.InvalidSyntaxError
	var repeated *repeatedFlagError
	switch {
	case errors.As(err, &repeated):
		return &usageError{err}
	case errors.As(err, &invalid):
		f := invalid.GetFlag()
		accepted := ""
		var ve *valueError
		switch {
		case errors.As(err, &ve):
			accepted = ve.accepted
		case f.Value.Type() == "bool":
			accepted = "true or false"
		default:
			accepted = errors.Unwrap(err).Error()
		}
		return badValue("--"+f.Name, invalid.GetValue(), accepted)
	case errors.As(err, &missing):
		f := missing.GetFlag()
		_, usage := pflag.UnquoteUsage(f)
		return usagef("flag --%s needs a value: %s", f.Name, usage)
	case errors.As(err, &unknown):
		name := "--" + unknown.GetSpecifiedName()
		if unknown.GetSpecifiedShortnames() != "" {
			name = "-" + unknown.GetSpecifiedName()
		}
		return usagef("unknown flag %s for %s: want one of %s", name, cmd, flagNames(fs))
	case errors.As(err, &syntax):
		return usagef("bad flag syntax %q for %s: want --name or --name=value", syntax.GetSpecifiedFlag(), cmd)
	}
	return &usageError{fmt.Errorf("%s: %w", cmd, err)}
}

// flagNames lists a flag set's flags for error messages.
func flagNames(fs *pflag.FlagSet) string {
	var names []string
	fs.VisitAll(func(f *pflag.Flag) { names = append(names, "--"+f.Name) })
	return strings.Join(names, ", ")
}

// flagUsages formats flags for --help: "  -g, --gpus N   text", with the
// value named by the back-quoted word of the usage text; withHelp adds the
// -h, --help line that pflag answers without a defined flag.
func flagUsages(fs *pflag.FlagSet, withHelp bool) string {
	type line struct{ left, usage string }
	var lines []line
	width := 0
	fs.VisitAll(func(f *pflag.Flag) {
		name, usage := pflag.UnquoteUsage(f)
		left := "      --" + f.Name
		if f.Shorthand != "" {
			left = "  -" + f.Shorthand + ", --" + f.Name
		}
		switch {
		case f.Value.Type() == "bool":
		case f.NoOptDefVal != "":
			left += "[=" + name + "]"
		case name != "":
			left += " " + name
		}
		if d := f.DefValue; d != "" && d != "false" && d != "0" && f.Value.Type() != "bool" {
			usage += " (default " + d + ")"
		}
		lines = append(lines, line{left, usage})
		width = max(width, len(left))
	})
	if withHelp {
		lines = append(lines, line{"  -h, --help", "show this help"})
		width = max(width, len("  -h, --help"))
	}
	var b strings.Builder
	for _, l := range lines {
		fmt.Fprintf(&b, "%-*s   %s\n", width, l.left, l.usage)
	}
	return b.String()
}
