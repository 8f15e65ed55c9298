package gpu

import (
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestUtilization(t *testing.T) {
	unknown := Utilization{}
	require.Equal(t, "-", unknown.String())
	require.Equal(t, "37%", Percent(37).String())
	require.Equal(t, Percent(100), Percent(140), "clamped")
	require.Equal(t, Percent(0), Percent(-3), "clamped")

	require.True(t, Percent(4).Below(5))
	require.False(t, Percent(5).Below(5), "at the level is busy")
	require.False(t, unknown.Below(5), "unknown is never idle")

	b, err := json.Marshal(struct{ A, B Utilization }{Percent(0), unknown})
	require.NoError(t, err)
	require.JSONEq(t, `{"A": 0, "B": null}`, string(b))
}
