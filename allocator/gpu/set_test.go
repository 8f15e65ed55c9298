package gpu

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestSet(t *testing.T) {
	s := SetOf([]Device{{Index: 2, UUID: "GPU-c"}, {Index: 0, UUID: "GPU-a"}, {Index: 1, UUID: "GPU-b"}})
	require.Equal(t, []int{0, 1, 2}, s.Indices())
	require.Equal(t, []string{"GPU-a", "GPU-b", "GPU-c"}, s.UUIDs())
	require.Equal(t, "0,1,2", s.IndexList())

	id, ok := s.ByIndex(2)
	require.True(t, ok)
	require.Equal(t, ID{UUID: "GPU-c", Index: 2}, id)
	_, ok = s.ByIndex(3)
	require.False(t, ok)
	id, ok = s.ByUUID("GPU-b")
	require.True(t, ok)
	require.Equal(t, 1, id.Index)

	uuids, err := s.UUIDsAt([]int{2, 0})
	require.NoError(t, err)
	require.Equal(t, []string{"GPU-c", "GPU-a"}, uuids, "in the order asked")
	_, err = s.UUIDsAt([]int{0, 7})
	var unknown *UnknownIndexError
	require.ErrorAs(t, err, &unknown)
	require.Equal(t, 7, unknown.Index)

	picked, rest := s.Pick([]string{"GPU-c", "GPU-gone", "GPU-a"})
	require.Equal(t, []int{0, 2}, picked.Indices())
	require.Equal(t, []string{"GPU-gone"}, rest)
	require.Equal(t, "0,2,GPU-gone", s.List([]string{"GPU-gone", "GPU-c", "GPU-a"}), "known by index first")
	require.Equal(t, "1", s.Name("GPU-b"))
	require.Equal(t, "GPU-x", s.Name("GPU-x"))
}

func TestSetUnionPrefersTheLater(t *testing.T) {
	registered := NewSet(ID{UUID: "GPU-a", Index: 0}, ID{UUID: "GPU-b", Index: 1}, ID{UUID: "GPU-gone", Index: 2})
	scanned := NewSet(ID{UUID: "GPU-a", Index: 1}, ID{UUID: "GPU-b", Index: 0})
	u := registered.Union(scanned)
	require.Equal(t, []ID{{"GPU-b", 0}, {"GPU-a", 1}, {"GPU-gone", 2}}, u.IDs())
	require.Equal(t, 3, u.Len())
}

func TestVendorExports(t *testing.T) {
	s := NewSet(ID{UUID: "GPU-b", Index: 3}, ID{UUID: "GPU-a", Index: 1})
	nv := VendorOf(ProviderNVML)
	require.Equal(t, []Env{{"CUDA_VISIBLE_DEVICES", "1,3"}, {"CUDA_DEVICE_ORDER", "PCI_BUS_ID"}}, nv.Exports(s.IDs(), ByIndex))
	require.Equal(t, []Env{{"CUDA_VISIBLE_DEVICES", "GPU-a,GPU-b"}}, nv.Exports(s.IDs(), ByUUID))
	slots := []ID{{"GPU-b", 3}, {"GPU-a", 1}}
	require.Equal(t, []Env{{"CUDA_VISIBLE_DEVICES", "GPU-b,GPU-a"}}, nv.Exports(slots, ByUUID), "in the order given")
	require.Equal(t, "NVIDIA", VendorOf(ProviderFake).Name)
	require.Equal(t, "NVIDIA", VendorOf("auto").Name)
	require.Equal(t, "AMD", VendorOf(ProviderAMDSMI).Name)
	require.Equal(t, "/dev/nvidia3", nv.DeviceFile(3))
	require.Equal(t, "/dev/nvidia2", nv.NthDeviceFile(2))

	amd := VendorOf(ProviderAMDSMI)
	want := []Env{{"ROCR_VISIBLE_DEVICES", "1,3"}, {"HIP_VISIBLE_DEVICES", "0,1"}}
	require.Equal(t, want, amd.Exports(s.IDs(), ByIndex))
	require.Equal(t, want, amd.Exports(s.IDs(), ByUUID), "amd-smi reports no UUID the ROCm runtime takes")
	require.Equal(t, []Env{{"ROCR_VISIBLE_DEVICES", "3,1"}, {"HIP_VISIBLE_DEVICES", "0,1"}}, amd.Exports(slots, ByIndex))
	require.Equal(t, "/dev/dri/renderD129", amd.DeviceFile(129))
	require.Equal(t, "/dev/dri/renderD130", amd.NthDeviceFile(2))
	require.Equal(t, []string{"ROCR_VISIBLE_DEVICES", "HIP_VISIBLE_DEVICES"}, amd.Variables())

	require.Nil(t, amd.Exports(nil, ByIndex))
}
