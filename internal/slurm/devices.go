package slurm

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"

	"canhazgpu/allocator"
	"canhazgpu/allocator/gpu"
)

// Slurm numbers a node's GPUs by their position in gres.conf, which need
// not be the provider's order nor the device file's number. The one link
// that holds on every node is the device file: gres.conf lists
// /dev/nvidia<minor> (NVIDIA) or /dev/dri/renderD<minor> (AMD), and the
// provider reports each GPU's minor number. So index → device file →
// minor → the GPU with that minor → its UUID.

// DevicePath is the device file of Slurm's GPU index i: the i-th entry of
// gres_devices, or the vendor's i-th device file when gres_devices is not
// set (gres.conf listing /dev/nvidia[0-N] or /dev/dri/renderD[128-…] in
// order, the common case).
func DevicePath(v gpu.Vendor, gresDevices []string, i int) (string, error) {
	if i < 0 {
		return "", &allocator.InputError{Field: "slurm gpu index", Value: strconv.Itoa(i), Accepted: "zero or more"}
	}
	if len(gresDevices) == 0 {
		return v.NthDeviceFile(i), nil
	}
	if i >= len(gresDevices) {
		return "", &allocator.InputError{Field: "slurm gpu index", Value: strconv.Itoa(i),
			Accepted: fmt.Sprintf("0-%d: slurm.gres_devices lists %d device files", len(gresDevices)-1, len(gresDevices))}
	}
	return gresDevices[i], nil
}

// Minor is the minor number of a GPU device file: the digits that end its
// name (/dev/nvidia3 → 3, /dev/dri/renderD129 → 129; the drivers name
// their device files so), or,
// for a name without them, the minor of the character device it is.
// The name comes first because it needs no system call and holds for
// NVIDIA and DRM render device files, whose minor is the number in the name.
func Minor(path string) (int, error) {
	base := filepath.Base(path)
	digits := base[len(strings.TrimRight(base, "0123456789")):]
	if digits != "" && len(digits) <= 6 {
		return strconv.Atoi(digits)
	}
	fi, err := os.Stat(path)
	if err != nil {
		return 0, fmt.Errorf("gpu device file: %w", err)
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok || fi.Mode()&os.ModeCharDevice == 0 {
		return 0, fmt.Errorf("gpu device file %s: not a character device and no number at the end of its name", path)
	}
	return linuxMinor(uint64(st.Rdev)), nil
}

// linuxMinor decodes the minor number from a Linux dev_t (glibc's
// gnu_dev_minor).
func linuxMinor(dev uint64) int {
	return int((dev & 0xff) | ((dev >> 12) & 0xfff00))
}

// Resolve maps Slurm's GPU indices to the devices of a scan, in the given
// order. Every index must lead to exactly one scanned GPU.
func Resolve(v gpu.Vendor, gresDevices []string, indices []int, devs []gpu.Device) ([]gpu.Device, error) {
	out := make([]gpu.Device, 0, len(indices))
	for _, i := range indices {
		path, err := DevicePath(v, gresDevices, i)
		if err != nil {
			return nil, err
		}
		minor, err := Minor(path)
		if err != nil {
			return nil, fmt.Errorf("slurm GPU %d: %w", i, err)
		}
		j := slices.IndexFunc(devs, func(d gpu.Device) bool { return d.Minor == minor })
		if j < 0 {
			return nil, fmt.Errorf("slurm GPU %d: %s (minor %d) is no GPU of this node (minors %s); check slurm.gres_devices against gres.conf",
				i, path, minor, minorsOf(devs))
		}
		out = append(out, devs[j])
	}
	return out, nil
}

func minorsOf(devs []gpu.Device) string {
	if len(devs) == 0 {
		return "none"
	}
	parts := make([]string, len(devs))
	for i, d := range devs {
		parts[i] = strconv.Itoa(d.Minor)
	}
	return strings.Join(parts, ",")
}

// Indices maps GPUs of a scan (by UUID) to Slurm's indices: the inverse
// of Resolve over Slurm's indices 0..n-1, n the GPUs gres_devices lists or
// else the GPUs of the scan.
func Indices(v gpu.Vendor, gresDevices []string, uuids []string, devs []gpu.Device) ([]int, error) {
	n := len(gresDevices)
	if n == 0 {
		n = len(devs)
	}
	bySlurm := map[string]int{}
	for k := range n {
		found, err := Resolve(v, gresDevices, []int{k}, devs)
		if err == nil {
			bySlurm[found[0].UUID] = k
		}
	}
	out := make([]int, len(uuids))
	for i, u := range uuids {
		k, ok := bySlurm[u]
		if !ok {
			return nil, fmt.Errorf("GPU %s has no Slurm index: no device file of slurm.gres_devices leads to it", u)
		}
		out[i] = k
	}
	return out, nil
}
