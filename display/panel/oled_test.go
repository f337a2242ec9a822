package panel

import (
	"bytes"
	"context"
	"image"
	"testing"
	"time"

	"periph.io/x/conn/v3/gpio"
	"periph.io/x/conn/v3/gpio/gpiotest"
	"periph.io/x/conn/v3/i2c/i2ctest"
	"periph.io/x/conn/v3/spi/spitest"

	"github.com/devicegrant/devicegrant/display"
)

func card() display.Card {
	return display.Card{URI: "HTTPS://AUTH.EXAMPLE.ORG/D/BCDFGHJK", UserCode: "BCDF-GHJK",
		ShortURI: "https://auth.example.org/device", Expires: now.Add(10 * time.Minute)}
}

var now = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// pageBytes encodes f in page order independently of Frame.Pages: bit b of
// byte x of page p is pixel (x, 8p+b), set when lit (not ink).
func pageBytes(f *display.Frame, p int) []byte {
	out := make([]byte, f.Width)
	for x := range out {
		for b := 0; b < 8; b++ {
			if !f.Ink(x, 8*p+b) {
				out[x] |= 1 << b
			}
		}
	}
	return out
}

// wantI2C is the I²C traffic for pages [first..last] columns of f.
func wantI2C(addr uint16, f *display.Frame, offset int, spans map[int][2]int) []i2ctest.IO {
	var ops []i2ctest.IO
	for p := 0; p < f.Height/8; p++ {
		s, ok := spans[p]
		if !ok {
			continue
		}
		col := s[0] + offset
		ops = append(ops,
			i2ctest.IO{Addr: addr, W: []byte{0x00, 0xB0 | byte(p), byte(col & 15), 0x10 | byte(col>>4)}},
			i2ctest.IO{Addr: addr, W: append([]byte{0x40}, pageBytes(f, p)[s[0]:s[1]+1]...)})
	}
	return ops
}

func fullSpans(f *display.Frame) map[int][2]int {
	m := map[int][2]int{}
	for p := 0; p < f.Height/8; p++ {
		m[p] = [2]int{0, f.Width - 1}
	}
	return m
}

func equalOps(t *testing.T, what string, got, want []i2ctest.IO) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d transfers, want %d", what, len(got), len(want))
	}
	for i := range got {
		if got[i].Addr != want[i].Addr || !bytes.Equal(got[i].W, want[i].W) || len(got[i].R) != 0 {
			t.Fatalf("%s: transfer %d = %#x % x, want %#x % x", what, i, got[i].Addr, got[i].W, want[i].Addr, want[i].W)
		}
	}
}

func TestOLEDI2C(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		ctl    Controller
		w, h   int
		init   []byte
		offset int
	}{
		{SSD1306, 128, 64, []byte{0xAE, 0xD5, 0x80, 0xA8, 0x3F, 0xD3, 0x00, 0x40, 0x8D, 0x14, 0x20, 0x02, 0xA1, 0xC8, 0xDA, 0x12, 0x81, 0xCF, 0xD9, 0xF1, 0xDB, 0x40, 0xA4, 0xA6, 0xAF}, 0},
		{SSD1306, 128, 32, []byte{0xAE, 0xD5, 0x80, 0xA8, 0x1F, 0xD3, 0x00, 0x40, 0x8D, 0x14, 0x20, 0x02, 0xA1, 0xC8, 0xDA, 0x02, 0x81, 0xCF, 0xD9, 0xF1, 0xDB, 0x40, 0xA4, 0xA6, 0xAF}, 0},
		{SH1106, 128, 64, []byte{0xAE, 0xD5, 0x80, 0xA8, 0x3F, 0xD3, 0x00, 0x40, 0xAD, 0x8B, 0xA1, 0xC8, 0xDA, 0x12, 0x81, 0x80, 0xD9, 0x22, 0xDB, 0x35, 0xA4, 0xA6, 0xAF}, 2},
	} {
		rec := &i2ctest.Record{}
		d, err := NewOLEDI2C(rec, 0x3c, OLEDOptions{Controller: tc.ctl, Width: tc.w, Height: tc.h})
		if err != nil {
			t.Fatal(err)
		}
		what := tc.ctl.String()
		equalOps(t, what+" init", rec.Ops, []i2ctest.IO{{Addr: 0x3c, W: append([]byte{0x00}, tc.init...)}})

		// The first frame goes out whole, page by page.
		f, _, err := card().Layout(tc.w, tc.h, display.LayoutOptions{Now: now})
		if err != nil {
			t.Fatal(err)
		}
		rec.Ops = nil
		if err := d.Show(ctx, f); err != nil {
			t.Fatal(err)
		}
		equalOps(t, what+" full frame", rec.Ops, wantI2C(0x3c, f, tc.offset, fullSpans(f)))

		// The same frame again: nothing on the bus.
		rec.Ops = nil
		if err := d.Show(ctx, f); err != nil {
			t.Fatal(err)
		}
		if len(rec.Ops) != 0 {
			t.Fatalf("%s: unchanged frame sent %d transfers", what, len(rec.Ops))
		}

		// Another user code: only the pages and columns of its last
		// letter change.
		c := card()
		c.UserCode = "BCDF-GHJX"
		g, _, _ := c.Layout(tc.w, tc.h, display.LayoutOptions{Now: now})
		spans := map[int][2]int{}
		for p := 0; p < tc.h/8; p++ {
			a, b := pageBytes(f, p), pageBytes(g, p)
			for x := range a {
				if a[x] != b[x] {
					s, ok := spans[p]
					if !ok {
						s[0] = x
					}
					s[1] = x
					spans[p] = s
				}
			}
		}
		if len(spans) == 0 || len(spans) == tc.h/8 {
			t.Fatalf("%s: code change touches %d pages", what, len(spans))
		}
		rec.Ops = nil
		if err := d.Show(ctx, g); err != nil {
			t.Fatal(err)
		}
		equalOps(t, what+" partial update", rec.Ops, wantI2C(0x3c, g, tc.offset, spans))

		rec.Ops = nil
		if err := d.Close(); err != nil {
			t.Fatal(err)
		}
		equalOps(t, what+" close", rec.Ops, []i2ctest.IO{{Addr: 0x3c, W: []byte{0x00, 0xAE}}})
	}
}

// dcPin logs the level of the D/C pin against the SPI transfer count.
type dcPin struct {
	gpiotest.Pin
	rec    *spitest.Record
	levels []gpio.Level // level in force for each transfer, by index
}

func (p *dcPin) Out(l gpio.Level) error {
	p.rec.Lock()
	n := len(p.rec.Ops)
	p.rec.Unlock()
	p.levels = append(p.levels[:min(n, len(p.levels))], make([]gpio.Level, max(0, n+1-len(p.levels)))...)
	p.levels[n] = l
	return p.Pin.Out(l)
}

func TestOLEDSPI(t *testing.T) {
	ctx := context.Background()
	rec := &spitest.Record{}
	dc := &dcPin{rec: rec}
	rst := &gpiotest.Pin{N: "RST"}
	d, err := NewOLEDSPI(rec, dc, rst, OLEDOptions{Controller: SH1106})
	if err != nil {
		t.Fatal(err)
	}
	if rst.Read() != gpio.High {
		t.Fatal("reset pin left low")
	}
	f, _, err := card().Layout(128, 64, display.LayoutOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Show(ctx, f); err != nil {
		t.Fatal(err)
	}
	// Expected: init (command), then per page a command and a data run.
	type tx struct {
		dc gpio.Level
		w  []byte
	}
	want := []tx{{gpio.Low, InitSequence(OLEDOptions{Controller: SH1106})}}
	for p := 0; p < 8; p++ {
		want = append(want, tx{gpio.Low, []byte{0xB0 | byte(p), 0x02, 0x10}}, tx{gpio.High, pageBytes(f, p)})
	}
	if len(rec.Ops) != len(want) {
		t.Fatalf("%d SPI transfers, want %d", len(rec.Ops), len(want))
	}
	for i, w := range want {
		if !bytes.Equal(rec.Ops[i].W, w.w) || dc.levels[i] != w.dc {
			t.Fatalf("transfer %d: D/C %v % x, want D/C %v % x", i, dc.levels[i], rec.Ops[i].W, w.dc, w.w)
		}
	}
	n := len(rec.Ops)
	if err := d.Show(ctx, f); err != nil {
		t.Fatal(err)
	}
	if len(rec.Ops) != n {
		t.Fatalf("unchanged frame sent %d transfers", len(rec.Ops)-n)
	}
	// An image of another type with the same pixels is also unchanged.
	rgba := image.NewRGBA(f.Bounds())
	for y := 0; y < f.Height; y++ {
		for x := 0; x < f.Width; x++ {
			rgba.Set(x, y, f.At(x, y))
		}
	}
	if err := d.Show(ctx, rgba); err != nil || len(rec.Ops) != n {
		t.Fatalf("same pixels as RGBA: err %v, %d transfers", err, len(rec.Ops)-n)
	}
	if _, err := NewOLEDSPI(rec, nil, nil, OLEDOptions{}); err == nil {
		t.Fatal("SPI without D/C accepted")
	}
}

func TestOLEDCancelled(t *testing.T) {
	rec := &i2ctest.Record{}
	d, err := NewOLEDI2C(rec, 0x3c, OLEDOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	rec.Ops = nil
	if err := d.Clear(ctx); err == nil || len(rec.Ops) != 0 {
		t.Fatalf("cancelled Clear: err %v, %d transfers", err, len(rec.Ops))
	}
	// The panel state is still unknown, so a later Clear writes everything.
	if err := d.Clear(context.Background()); err != nil || len(rec.Ops) != 16 {
		t.Fatalf("Clear: err %v, %d transfers, want 16", err, len(rec.Ops))
	}
}
