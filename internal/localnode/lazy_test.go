package localnode

import (
	"context"
	"errors"
	"testing"

	"github.com/stretchr/testify/require"

	"canhazgpu/allocator/gpu"
)

// stubProvider reports fixed devices and counts its closes.
type stubProvider struct {
	devs   []gpu.Device
	closes int
}

func (s *stubProvider) Devices(context.Context, ...gpu.Extra) ([]gpu.Device, error) {
	return s.devs, nil
}
func (s *stubProvider) Close() error { s.closes++; return nil }

func TestLazyProviderStartsOnceAtTheFirstScan(t *testing.T) {
	ctx := context.Background()
	prov := &stubProvider{devs: []gpu.Device{{Index: 0, UUID: "GPU-a"}}}
	opens := 0
	l := &lazyProvider{open: func() (gpu.Provider, error) { opens++; return prov, nil }}
	require.Equal(t, 0, opens, "making it starts nothing")
	for range 2 {
		devs, err := l.Devices(ctx)
		require.NoError(t, err)
		require.Equal(t, prov.devs, devs)
	}
	require.Equal(t, 1, opens)
	require.NoError(t, l.Close())
	require.Equal(t, 1, prov.closes)
	_, err := l.Devices(ctx)
	require.ErrorIs(t, err, errClosed, "a scan after Close starts nothing again")
	require.Equal(t, 1, opens)
}

func TestLazyProviderThatNeverScannedStartsNothing(t *testing.T) {
	l := &lazyProvider{open: func() (gpu.Provider, error) {
		t.Error("the provider was started without a scan")
		return nil, errors.New("unreachable")
	}}
	require.NoError(t, l.Close())
}

func TestLazyProviderTriesToStartOnce(t *testing.T) {
	opens := 0
	// What a failed start returns beside its error (here a provider, as
	// an interface holding a nil pointer would be) is never used.
	half := &stubProvider{}
	l := &lazyProvider{open: func() (gpu.Provider, error) { opens++; return half, errors.New("NVML unavailable") }}
	for range 2 {
		_, err := l.Devices(context.Background())
		require.EqualError(t, err, "NVML unavailable")
	}
	require.Equal(t, 1, opens)
	require.NoError(t, l.Close())
	require.Zero(t, half.closes)
}
