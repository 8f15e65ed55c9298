package localnode

import (
	"context"
	"errors"
	"sync"

	"canhazgpu/allocator/gpu"
)

// errClosed: a scan asked after the node was closed.
var errClosed = errors.New("GPU provider closed")

// lazyProvider starts a provider at the first scan, once. NVML's start
// costs time and fails outright on a machine without GPUs, where the
// commands that only read the store (report, queue, release) must work.
type lazyProvider struct {
	open func() (gpu.Provider, error)

	mu    sync.Mutex
	tried bool // open was called (or the provider closed): never again
	prov  gpu.Provider
	err   error
}

// started starts the provider on the first call and remembers the outcome,
// a failure included: one program run tries once.
func (l *lazyProvider) started() (gpu.Provider, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.tried {
		l.tried = true
		// Only a provider that started is kept (and later closed): what
		// a failed start returns beside its error is never touched.
		if p, err := l.open(); err != nil {
			l.err = err
		} else {
			l.prov = p
		}
	}
	return l.prov, l.err
}

func (l *lazyProvider) Devices(ctx context.Context, extras ...gpu.Extra) ([]gpu.Device, error) {
	p, err := l.started()
	if err != nil {
		return nil, err
	}
	return p.Devices(ctx, extras...)
}

// Close closes the provider if a scan started it; a node that never
// scanned never starts one.
func (l *lazyProvider) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	p := l.prov
	l.tried, l.prov, l.err = true, nil, errClosed
	if p == nil {
		return nil
	}
	return p.Close()
}
