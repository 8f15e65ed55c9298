package cli

import (
	"context"
	"fmt"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/emulation"
	"github.com/chromedp/chromedp"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"canhazgpu/allocator"
	"canhazgpu/internal/testreq"
)

// browser starts Debian's headless chromium with the flags this closed
// network needs (no background connections, no sandbox as root) and
// collects every console error, exception and browser log error.
func browser(t *testing.T) (context.Context, func() []string) {
	t.Helper()
	testreq.Need(t, testreq.Chromium)
	opts := []chromedp.ExecAllocatorOption{chromedp.ExecPath("chromium"), chromedp.Headless, chromedp.NoSandbox,
		chromedp.DisableGPU, chromedp.WindowSize(1000, 700), chromedp.NoFirstRun, chromedp.UserDataDir(t.TempDir()),
		chromedp.Flag("disable-quic", true), chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true), chromedp.Flag("disable-sync", true)}
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(actx)
	t.Cleanup(func() { cancel(); cancelAlloc() })
	var mu sync.Mutex
	var errs []string
	messages := chromedp.Console(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for m, err := range messages {
			if err != nil {
				return
			}
			if m.Type == chromedp.ConsoleException || m.Type == chromedp.ConsoleError {
				mu.Lock()
				errs = append(errs, fmt.Sprintf("%s: %s", m.Type, m.Text))
				mu.Unlock()
			}
		}
	}()
	return ctx, func() []string {
		mu.Lock()
		defer mu.Unlock()
		return append([]string(nil), errs...)
	}
}

// screenshotsEnv names a directory for the browser test's screenshots,
// kept after the test: `make web-screenshots` writes docs/images/ with it.
// Unset, they go to a temporary directory.
const screenshotsEnv = "CANHAZGPU_SCREENSHOTS"

func screenshot(t *testing.T, ctx context.Context, dir, name string) {
	t.Helper()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(dir, "web-"+name+".png"), png, 0o644))
}

// waitFor polls the page until the JavaScript expression is true; the
// page refreshes itself every few seconds, so this is the bound.
func waitFor(t *testing.T, ctx context.Context, expr string) {
	t.Helper()
	_, err := chromedp.Run(ctx, chromedp.Poll[bool](expr, chromedp.WithPollingTimeout(30*time.Second)))
	require.NoError(t, err, "waiting for %s", expr)
}

// addHistory stores a finished reservation on node, as the store's
// operations record one (lib.lua's history_record), with the times given.
func addHistory(t *testing.T, node, user, kind string, start, end time.Time) {
	t.Helper()
	rec := fmt.Sprintf(`{"g":"GPU-history-%d","k":%q,"u":%q,"j":"","s":%d,"e":%d,"x":"released"}`, start.UnixNano(), kind, user, start.UnixMilli(), end.UnixMilli())
	c := srv.Client()
	defer c.Close()
	require.NoError(t, c.ZAdd(context.Background(), "chg:{"+node+"}:hist", redis.Z{Score: float64(end.UnixMilli()), Member: rec}).Err())
}

func eval[T any](t *testing.T, ctx context.Context, expr string) T {
	t.Helper()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](expr))
	require.NoError(t, err, expr)
	return v
}

// TestDashboardInABrowser loads every page of a two-node cluster in
// chromium and asserts on the DOM: the unreserved GPU highlighted with
// its user and PID, the filter by user (a form, no script needed), a
// reservation made with the CLI appearing without a reload, the usage
// chart, and no console errors.
func TestDashboardInABrowser(t *testing.T) {
	f := registered(t, busyGPUs)
	other := registered(t, idleGPUs(2))
	require.Equal(t, 0, other.run(alice, "reserve", "--gpu-ids", "0", "--duration", "1h").code)
	// The other states: on this node, carol's GPU 2 also used by
	// mallory; on a third node a Slurm job, a PBS job, a request waiting
	// and the whole node drained.
	f.setGPUs(strings.Replace(busyGPUs, `{"index": 2, "memory_used_mb": 0}`,
		`{"index": 2, "processes": [{"pid": 5151, "name": "train", "user": "mallory", "uid": 2005, "used_memory_mb": 2000}]}`, 1))
	third := registered(t, idleGPUs(3))
	ctx3, st3 := context.Background(), third.store()
	_, err := f.store().Allocate(ctx3, allocator.Request{RequestID: allocator.NewRequestID(), Kind: allocator.KindManual, User: "carol",
		GPUs: []string{"GPU-fa4e0000-0000-4000-8000-000000000002"}, Lease: time.Hour})
	require.NoError(t, err)
	for _, r := range []allocator.Request{{Kind: allocator.KindSlurm, User: "carol", JobID: "17", Count: 1},
		{Kind: allocator.KindPBS, User: "dave", JobID: "3.pbs", Count: 1}} {
		r.RequestID = allocator.NewRequestID()
		_, err := st3.Allocate(ctx3, r)
		require.NoError(t, err)
	}
	_, err = st3.Enqueue(ctx3, allocator.QueueEntry{ID: "w1", Kind: allocator.KindManual, User: "erin", Count: 3}, time.Hour)
	require.NoError(t, err)
	require.NoError(t, st3.SetFlags(ctx3, []allocator.Flag{{Message: "drained for maintenance"}}))
	srvHTTP := httptest.NewServer(webHandler(t, f))
	t.Cleanup(srvHTTP.Close)
	ctx, consoleErrors := browser(t)
	shots := os.Getenv(screenshotsEnv)
	if shots == "" {
		shots = t.TempDir()
	}

	require.NoError(t, chromedp.Do(ctx, chromedp.Navigate(srvHTTP.URL+"/")))
	unreserved := fmt.Sprintf(`section[data-node=%q] li.gpu[data-state="unreserved"]`, f.node)
	waitFor(t, ctx, fmt.Sprintf("document.querySelector(%q) !== null", unreserved))
	cell := eval[string](t, ctx, fmt.Sprintf("document.querySelector(%q).textContent", unreserved))
	require.Contains(t, cell, "bob")
	require.Contains(t, cell, "PID 4242")
	bg := eval[string](t, ctx, fmt.Sprintf("getComputedStyle(document.querySelector(%q)).backgroundColor", unreserved))
	free := eval[string](t, ctx, `getComputedStyle(document.querySelector('li.gpu[data-state="free"]')).backgroundColor`)
	require.NotEqual(t, free, bg, "the unreserved GPU is coloured apart from the free ones")
	foreign := eval[string](t, ctx, fmt.Sprintf(`document.querySelector('section[data-node=%q] li.gpu[data-state="foreign"]').textContent`, f.node))
	require.Contains(t, foreign, "carol, mallory")
	require.Contains(t, foreign, "PID 5151 (train, mallory)")
	for state, user := range map[string]string{"slurm": "carol", "pbs": "dave"} {
		require.True(t, eval[bool](t, ctx, fmt.Sprintf(`document.querySelector('section.flagged[data-node=%q] li.gpu[data-state=%q][data-user=%q]') !== null`,
			third.node, state, user)), state)
	}
	require.Contains(t, eval[string](t, ctx, fmt.Sprintf(`document.querySelector('section[data-node=%q] h2').textContent`, third.node)), "flagged 1 waiting")
	screenshot(t, ctx, shots, "overview")

	// A reservation made through the CLI shows up without a reload: the
	// marker set on this window survives only if the page is not loaded
	// again.
	eval[bool](t, ctx, "window.notReloaded = true")
	require.Equal(t, 0, other.run(bob, "reserve", "--gpu-ids", "1", "--duration", "1h").code)
	waitFor(t, ctx, fmt.Sprintf(`document.querySelector('section[data-node=%q] li.gpu[data-state="manual"][data-user="bob"]') !== null`, other.node))
	require.True(t, eval[bool](t, ctx, "window.notReloaded === true"))

	// Filter by user through the form.
	_, err = chromedp.Run(ctx, chromedp.SetValue(chromedp.CSS(`select[name="user"]`), "alice"))
	require.NoError(t, err)
	resp, err := chromedp.RunResponse(ctx, chromedp.Submit(chromedp.CSS("form.filter")))
	require.NoError(t, err)
	require.Equal(t, int64(200), resp.Status)
	waitFor(t, ctx, `location.search === "?node=&user=alice"`)
	waitFor(t, ctx, `document.querySelectorAll('li.gpu[data-user="alice"]').length > 0`)
	require.Equal(t, 0, eval[int](t, ctx, `document.querySelectorAll('li.gpu:not([data-user="alice"])').length`))
	screenshot(t, ctx, shots, "filtered")

	require.NoError(t, chromedp.Do(ctx, chromedp.Navigate(srvHTTP.URL+"/node/"+f.node)))
	waitFor(t, ctx, `document.querySelector('tr#gpu-1.s-unreserved') !== null`)
	row := eval[string](t, ctx, `document.querySelector('tr#gpu-1').textContent`)
	require.Contains(t, row, "WITHOUT RESERVATION")
	require.Contains(t, row, "PID 4242 (python3, bob)")
	screenshot(t, ctx, shots, "node")

	require.NoError(t, chromedp.Do(ctx, chromedp.Navigate(srvHTTP.URL+"/node/"+third.node)))
	waitFor(t, ctx, `document.querySelector('table.queue') !== null`)
	require.Contains(t, eval[string](t, ctx, `document.querySelector('table.queue tbody').textContent`), "erin")
	require.Contains(t, eval[string](t, ctx, `document.querySelector('ul.flags').textContent`), "node: drained for maintenance")

	// History over several days: grace's batch job two days ago, alice's
	// reservation across last midnight.
	midnight := time.Now().UTC().Truncate(24 * time.Hour)
	addHistory(t, f.node, "grace", "slurm", midnight.Add(-46*time.Hour), midnight.Add(-43*time.Hour))
	addHistory(t, f.node, "alice", "manual", midnight.Add(-2*time.Hour), midnight.Add(time.Hour))
	require.NoError(t, chromedp.Do(ctx, chromedp.Navigate(srvHTTP.URL+"/usage?days=7")))
	waitFor(t, ctx, `document.querySelector('svg.chart g.bar[data-user="alice"] rect') !== null`)
	require.Greater(t, eval[float64](t, ctx, `document.querySelector('svg.chart g.bar[data-user="alice"] rect.interactive').getBBox().height`), 0.0)
	// A bar per user and day with use, and each user's bars add up to
	// the table's GPU-hours.
	require.Equal(t, []string{midnight.Add(-24 * time.Hour).Format(time.DateOnly), midnight.Format(time.DateOnly)},
		eval[[]string](t, ctx, `[...document.querySelectorAll('svg.chart g.bar[data-user="alice"] g.day')].map(g => g.dataset.date)`))
	require.Equal(t, []string{midnight.Add(-48 * time.Hour).Format(time.DateOnly)},
		eval[[]string](t, ctx, `[...document.querySelectorAll('svg.chart g.bar[data-user="grace"] g.day')].map(g => g.dataset.date)`))
	require.Greater(t, eval[float64](t, ctx, `document.querySelector('svg.chart g.bar[data-user="grace"] rect.batch').getBBox().height`), 0.0)
	chart := eval[map[string]string](t, ctx, `Object.fromEntries([...document.querySelectorAll('svg.chart g.bar')].map(b =>
		[b.dataset.user, ([...b.querySelectorAll('g.day')].reduce((s, d) => s + Number(d.dataset.interactive) + Number(d.dataset.batch), 0) / 3600).toFixed(2)]))`)
	table := eval[map[string]string](t, ctx, `Object.fromEntries([...document.querySelectorAll('table.report tbody tr')].map(r =>
		[r.querySelector('th').textContent, r.querySelector('td').textContent]))`)
	// The chart's whole seconds and the table's rounded hours may fall on
	// either side of a hundredth for a reservation still running.
	require.Len(t, chart, len(table))
	for user, hours := range table {
		want, err := strconv.ParseFloat(hours, 64)
		require.NoError(t, err)
		got, err := strconv.ParseFloat(chart[user], 64)
		require.NoError(t, err, "%s has no bar", user)
		require.InDelta(t, want, got, 0.0101, "the bars of %s add up to the table's GPU-hours", user)
	}
	require.Equal(t, "3.00", table["grace"])
	screenshot(t, ctx, shots, "usage")

	// The dark scheme: another background, and the bars and labels still
	// apart from it.
	colours := `[getComputedStyle(document.body).backgroundColor, getComputedStyle(document.querySelector('svg.chart rect.batch')).fill,
		getComputedStyle(document.querySelector('svg.chart rect.interactive')).fill, getComputedStyle(document.querySelector('svg.chart text.label')).fill]`
	light := eval[[]string](t, ctx, colours)
	require.NoError(t, chromedp.Do(ctx, chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
		_, err := cdp.Call(ctx, tg, emulation.SetEmulatedMedia, emulation.SetEmulatedMediaParams{
			Features: []*emulation.MediaFeature{{Name: "prefers-color-scheme", Value: "dark"}}})
		return err
	})))
	dark := eval[[]string](t, ctx, colours)
	require.NotEqual(t, light[0], dark[0], "the dark scheme's background")
	for i, what := range []string{"batch bar", "interactive bar", "label"} {
		require.NotEqual(t, dark[0], dark[i+1], "%s on the dark background", what)
		require.NotEqual(t, light[0], light[i+1], "%s on the light background", what)
	}

	require.Empty(t, consoleErrors())
	t.Logf("screenshots in %s", shots)
}
