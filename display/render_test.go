package display

import (
	"bytes"
	"context"
	"errors"
	"image/png"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/devicegrant/devicegrant/internal/qrtest"
)

func TestUppercaseURIIsVersion2(t *testing.T) {
	q, err := EncodeQR("HTTPS://AUTH.EXAMPLE.ORG/D/BCDFGHJK", LevelM)
	if err != nil {
		t.Fatal(err)
	}
	if q.Version != 2 || q.Size != 25 {
		t.Fatalf("upper-case URI: version %d (%d modules), want 2 (25)", q.Version, q.Size)
	}
	lower, err := EncodeQR("https://auth.example.org/d/bcdfghjk", LevelM)
	if err != nil {
		t.Fatal(err)
	}
	if lower.Version <= q.Version {
		t.Fatalf("lower-case URI: version %d, want more than %d", lower.Version, q.Version)
	}
}

func TestPNG(t *testing.T) {
	for _, u := range testURIs {
		var buf bytes.Buffer
		if err := testCard(u).WritePNG(&buf, ImageOptions{}); err != nil {
			t.Fatal(err)
		}
		img, err := png.Decode(&buf)
		if err != nil {
			t.Fatal(err)
		}
		mustDecode(t, "PNG", img, u)
	}
}

func TestSVG(t *testing.T) {
	for _, u := range testURIs {
		var buf bytes.Buffer
		if err := testCard(u).WriteSVG(&buf, ImageOptions{Scale: 4}); err != nil {
			t.Fatal(err)
		}
		doc := buf.String()
		if !strings.Contains(doc, ">BCDF-GHJK</text>") {
			t.Errorf("SVG has no user code text")
		}
		img, err := rasteriseSVG(doc)
		if err != nil {
			t.Fatal(err)
		}
		mustDecode(t, "SVG", img, u)
	}
}

func TestPBM(t *testing.T) {
	for _, u := range testURIs {
		var buf bytes.Buffer
		if err := testCard(u).WritePBM(&buf, ImageOptions{Scale: 3}); err != nil {
			t.Fatal(err)
		}
		img, err := parsePBM(buf.Bytes())
		if err != nil {
			t.Fatal(err)
		}
		mustDecode(t, "PBM", img, u)
	}
}

func TestTerminal(t *testing.T) {
	for _, tc := range []struct {
		mode TermMode
		th   qrtest.Theme
	}{
		{TermColor, qrtest.DarkTheme},
		{TermColor, qrtest.LightTheme},
		{TermPlain, qrtest.DarkTheme},
		{TermPlainInk, qrtest.LightTheme},
	} {
		for _, u := range testURIs {
			var buf bytes.Buffer
			opt := TermOptions{Mode: tc.mode, Now: func() time.Time { return testNow }}
			if err := testCard(u).WriteTerminal(&buf, opt); err != nil {
				t.Fatal(err)
			}
			out := buf.String()
			hasEsc := strings.Contains(out, "\x1b")
			if hasEsc != (tc.mode == TermColor) {
				t.Errorf("%v: escape sequences present = %v", tc.mode, hasEsc)
			}
			if !strings.HasSuffix(out, "expires in 9:41") || !strings.Contains(out, "  BCDF-GHJK\n") {
				t.Errorf("%v: countdown or code missing:\n%s", tc.mode, out)
			}
			screen, err := parseTerminal(out, tc.th)
			if err != nil {
				t.Fatal(err)
			}
			for _, row := range screen {
				if len(row) > 80 {
					t.Fatalf("%v: a line of %d columns", tc.mode, len(row))
				}
			}
			mustDecode(t, "terminal "+tc.mode.String(), qrtest.Pixels(screen, tc.th), u)
		}
	}
}

// The plain mode is drawn for dark themes: on a light theme the symbol is
// inverted, and a reader that does not try inverted symbols cannot read it.
// This shows the test can tell the modes apart.
func TestTerminalPlainOnLightThemeIsInverted(t *testing.T) {
	var buf bytes.Buffer
	if err := testCard(testURIs[0]).WriteTerminal(&buf, TermOptions{Mode: TermPlain}); err != nil {
		t.Fatal(err)
	}
	screen, err := parseTerminal(buf.String(), qrtest.LightTheme)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := qrtest.Decode(qrtest.Pixels(screen, qrtest.LightTheme)); err == nil {
		t.Fatalf("inverted symbol decoded as %q", got)
	}
}

func TestPanels(t *testing.T) {
	for _, size := range [][2]int{{128, 64}, {128, 32}} {
		w, h := size[0], size[1]
		for _, u := range testURIs {
			pages, fit, err := testCard(u).Pages(w, h, LayoutOptions{Now: testNow})
			if errors.Is(err, ErrTooLong) {
				t.Logf("%d×%d: %s does not fit", w, h, u)
				continue
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(pages) != w*h/8 {
				t.Fatalf("%d bytes", len(pages))
			}
			mustDecode(t, fit.String(), pagesToImage(pages, w, h), u)
			back, err := FrameFromPages(pages, w, h)
			if err != nil {
				t.Fatal(err)
			}
			again, err := back.Pages()
			if err != nil || !bytes.Equal(again, pages) {
				t.Fatalf("page round trip differs: %v", err)
			}
		}
	}
}

func TestPanelFitOfUppercaseURI(t *testing.T) {
	c := testCard("HTTPS://AUTH.EXAMPLE.ORG/D/BCDFGHJK")
	for _, tc := range []struct{ w, h, scale, minQuiet int }{{128, 64, 2, 2}, {128, 32, 1, 2}} {
		f, err := c.Fit(tc.w, tc.h, LayoutOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if f.Version != 2 || f.Scale != tc.scale || f.Placement != Beside || f.Quiet < tc.minQuiet {
			t.Errorf("%d×%d: %v", tc.w, tc.h, f)
		}
		// Nothing drawn may come closer to the symbol than the quiet zone.
		fr, _, _ := c.Layout(tc.w, tc.h, LayoutOptions{Now: testNow})
		zone := f.Symbol.Inset(-f.Quiet * f.Scale)
		for y := zone.Min.Y; y < zone.Max.Y; y++ {
			for x := zone.Min.X; x < zone.Max.X; x++ {
				in := f.Symbol.Min.X <= x && x < f.Symbol.Max.X && f.Symbol.Min.Y <= y && y < f.Symbol.Max.Y
				if !in && fr.Ink(x, y) {
					t.Fatalf("%d×%d: ink at (%d,%d) in the quiet zone", tc.w, tc.h, x, y)
				}
			}
		}
		if zone.Min.X < 0 || zone.Min.Y < 0 || zone.Max.X > tc.w || zone.Max.Y > tc.h {
			t.Fatalf("quiet zone %v off the %d×%d panel", zone, tc.w, tc.h)
		}
	}
}

func TestFitPrefersHigherLevelAtSameScale(t *testing.T) {
	// On a large surface every level fits at the largest scale the
	// largest symbol allows; the fitter must then pick H.
	c := testCard("HTTPS://AUTH.EXAMPLE.ORG/D/BCDFGHJK")
	f, err := c.Fit(400, 300, LayoutOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, lv := range []Level{LevelH, LevelQ, LevelM, LevelL} {
		g, err := c.Fit(400, 300, LayoutOptions{Level: lv})
		if err != nil {
			t.Fatal(err)
		}
		if g.Scale > f.Scale || (g.Scale == f.Scale && lv > f.Level) {
			t.Errorf("auto fit %v loses to forced %v", f, g)
		}
	}
}

func TestFrameImageRoundTrip(t *testing.T) {
	f, _, err := testCard(testURIs[0]).Layout(128, 64, LayoutOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := f.WritePNG(&buf); err != nil {
		t.Fatal(err)
	}
	img, err := png.Decode(&buf)
	if err != nil {
		t.Fatal(err)
	}
	if g := FrameFromImage(img); !g.Equal(f) {
		t.Fatal("PNG round trip changed the frame")
	}
	if _, err := NewFrame(10, 12).Pages(); err == nil {
		t.Fatal("height 12 accepted for pages")
	}
}

func TestCountdown(t *testing.T) {
	c := Card{Expires: testNow.Add(10 * time.Minute)}
	for _, tc := range []struct {
		after time.Duration
		want  string
	}{
		{0, "expires in 10:00"},
		{time.Millisecond, "expires in 10:00"},
		{time.Second, "expires in 9:59"},
		{10*time.Minute - time.Millisecond, "expires in 0:01"},
		{10 * time.Minute, "expired"},
		{-time.Hour, "expires in 1:10:00"},
	} {
		if got := c.Countdown(testNow.Add(tc.after)); got != tc.want {
			t.Errorf("after %v: %q, want %q", tc.after, got, tc.want)
		}
	}
	if got := (Card{}).Countdown(testNow); got != "" {
		t.Errorf("no expiry: %q", got)
	}
}

// fakeClock advances by step each time it is read.
type fakeClock struct {
	t    time.Time
	step time.Duration
}

func (c *fakeClock) now() time.Time { c.t = c.t.Add(c.step); return c.t }

func TestLiveInPlace(t *testing.T) {
	c := Card{URI: testURIs[0], UserCode: "BCDF-GHJK", Expires: testNow.Add(3 * time.Second)}
	clk := &fakeClock{t: testNow.Add(-500 * time.Millisecond), step: 500 * time.Millisecond}
	var buf bytes.Buffer
	err := c.Live(context.Background(), &buf, TermOptions{Mode: TermColor, Redraw: RedrawInPlace, Now: clk.now, Tick: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	out := buf.String()
	for _, want := range []string{"expires in 0:03", "\r\x1b[K  expires in 0:02", "\r\x1b[K  expires in 0:01", "\r\x1b[K  expired\n"} {
		if !strings.Contains(out, want) {
			t.Errorf("missing %q in %q", want, out[len(out)-80:])
		}
	}
	if strings.Count(out, "\r\x1b[K") != 3 {
		t.Errorf("%d redraws, want 3 (one per change)", strings.Count(out, "\r\x1b[K"))
	}
	screen, err := parseTerminal(out, qrtest.DarkTheme)
	if err != nil {
		t.Fatal(err)
	}
	if last := screen[len(screen)-2]; string(runesOf(last)) != "  expired" {
		t.Errorf("last line %q", string(runesOf(last)))
	}
}

func runesOf(row []qrtest.Cell) []rune {
	var r []rune
	for _, c := range row {
		r = append(r, c.R)
	}
	return r
}

func TestLiveAppendAndCancel(t *testing.T) {
	c := Card{URI: testURIs[0], UserCode: "BCDF-GHJK", Expires: testNow.Add(3 * time.Minute)}
	clk := &fakeClock{t: testNow, step: 20 * time.Second}
	var buf bytes.Buffer
	err := c.Live(context.Background(), &buf, TermOptions{Mode: TermPlain, Now: clk.now, Tick: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	out := buf.String()
	if strings.Contains(out, "\x1b") {
		t.Error("escape sequence in append mode")
	}
	if !strings.Contains(out, "\n  expires in 1:40\n  expires in 0:40\n  expired\n") {
		t.Errorf("append lines wrong: %q", out[strings.Index(out, "expires"):])
	}

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	buf.Reset()
	err = c.Live(ctx, &buf, TermOptions{Mode: TermPlain, Now: func() time.Time { return testNow }})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled Live returned %v", err)
	}
}

func TestTermModeFor(t *testing.T) {
	if m := TermModeFor(&bytes.Buffer{}); m != TermPlain {
		t.Errorf("buffer: %v", m)
	}
	devNull, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	if err != nil {
		t.Skip(err)
	}
	defer devNull.Close()
	t.Setenv("NO_COLOR", "")
	if m := TermModeFor(devNull); m != TermColor {
		t.Errorf("character device: %v", m)
	}
	t.Setenv("NO_COLOR", "1")
	if m := TermModeFor(devNull); m != TermPlain {
		t.Errorf("character device with NO_COLOR: %v", m)
	}
}
