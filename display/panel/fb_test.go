package panel

import (
	"context"
	"encoding/binary"
	"image"
	"image/color"
	"os"
	"path/filepath"
	"testing"
)

func TestWriteFB(t *testing.T) {
	ctx := context.Background()
	src := image.NewRGBA(image.Rect(0, 0, 6, 4))
	for y := 0; y < 4; y++ {
		for x := 0; x < 6; x++ {
			src.Set(x, y, color.RGBA{uint8(40 * x), uint8(60 * y), uint8(255 - 40*x), 255})
		}
	}
	for _, g := range []FBGeometry{
		{Width: 8, Height: 5, BitsPerPixel: 16, LineLength: 24},             // RGB565, 8 bytes of padding per line
		{Width: 8, Height: 5, BitsPerPixel: 32, LineLength: 40},             // XRGB8888, 8 bytes of padding
		{Width: 7, Height: 5, BitsPerPixel: 32, LineLength: 64, YOffset: 1}, // panned
	} {
		path := filepath.Join(t.TempDir(), "fb")
		size := (g.YOffset + g.Height + 1) * g.LineLength
		sentinel := make([]byte, size)
		for i := range sentinel {
			sentinel[i] = 0xA5
		}
		if err := os.WriteFile(path, sentinel, 0o600); err != nil {
			t.Fatal(err)
		}
		f, err := os.OpenFile(path, os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		fb, err := NewFB(f, g)
		if err != nil {
			t.Fatal(err)
		}
		if err := fb.Show(ctx, src); err != nil {
			t.Fatal(err)
		}
		if err := fb.Close(); err != nil {
			t.Fatal(err)
		}
		mem, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		bpp := g.BitsPerPixel / 8
		for y := 0; y < size/g.LineLength; y++ {
			for off := 0; off < g.LineLength; off += bpp {
				x, vy := off/bpp, y-g.YOffset
				at := y*g.LineLength + off
				if vy < 0 || vy >= g.Height || x >= g.Width {
					for _, b := range mem[at : at+bpp] {
						if b != 0xA5 {
							t.Fatalf("%d bpp: byte outside the screen at %d written", g.BitsPerPixel, at)
						}
					}
					continue
				}
				want := color.RGBA{255, 255, 255, 255}
				if x < 6 && vy < 4 {
					want = src.RGBAAt(x, vy)
				}
				var got color.RGBA
				if bpp == 2 {
					v := binary.LittleEndian.Uint16(mem[at:])
					got = color.RGBA{uint8(v >> 11 << 3), uint8(v >> 5 & 63 << 2), uint8(v & 31 << 3), 255}
					want.R, want.G, want.B = want.R&^7, want.G&^3, want.B&^7
				} else {
					v := binary.LittleEndian.Uint32(mem[at:])
					got = color.RGBA{uint8(v >> 16), uint8(v >> 8), uint8(v), 255}
				}
				if got != want {
					t.Fatalf("%d bpp: pixel (%d,%d) = %v, want %v", g.BitsPerPixel, x, vy, got, want)
				}
			}
		}
	}
	if _, err := NewFB(nil, FBGeometry{Width: 8, Height: 2, BitsPerPixel: 16, LineLength: 8}); err == nil {
		t.Fatal("line length shorter than a row accepted")
	}
	if _, err := NewFB(nil, FBGeometry{Width: 8, Height: 2, BitsPerPixel: 24, LineLength: 24}); err == nil {
		t.Fatal("24 bpp accepted")
	}
}

// countingWriter counts WriteAt calls.
type countingWriter struct{ n int }

func (c *countingWriter) WriteAt(p []byte, off int64) (int, error) { c.n++; return len(p), nil }

func TestFBSkipsUnchangedFrame(t *testing.T) {
	ctx := context.Background()
	w := &countingWriter{}
	fb, err := NewFB(w, FBGeometry{Width: 320, Height: 240, BitsPerPixel: 16, LineLength: 640})
	if err != nil {
		t.Fatal(err)
	}
	f, _, err := card().Layout(320, 240, displayOpts())
	if err != nil {
		t.Fatal(err)
	}
	if err := fb.Show(ctx, f); err != nil || w.n != 240 {
		t.Fatalf("first frame: %v, %d lines", err, w.n)
	}
	if err := fb.Show(ctx, f); err != nil || w.n != 240 {
		t.Fatalf("same frame: %v, %d more lines", err, w.n-240)
	}
}
