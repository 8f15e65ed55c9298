//go:build !(linux && cgo)

package gpu

import "fmt"

// openNVML fails because go-nvml is cgo only and loads a Linux library.
func openNVML(string) (Provider, error) {
	return nil, fmt.Errorf("NVML support not built (needs linux and cgo); %s", nvmlUnavailableHint)
}
