package panel

import (
	"context"
	"image/png"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/devicegrant/devicegrant/display"
)

func TestOpenPNG(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "card.png")
	p, err := Open(ctx, "png:"+path+":128x64")
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if b := p.Bounds(); b.Dx() != 128 || b.Dy() != 64 {
		t.Fatalf("bounds %v", b)
	}
	f, _, err := card().Layout(128, 64, display.LayoutOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Show(ctx, f); err != nil {
		t.Fatal(err)
	}
	r, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	img, err := png.Decode(r)
	if err != nil {
		t.Fatal(err)
	}
	if !display.FrameFromImage(img).Equal(f) {
		t.Fatal("PNG panel file differs from the frame")
	}
	st, _ := os.Stat(path)
	if err := os.Chtimes(path, st.ModTime().Add(-3600e9), st.ModTime().Add(-3600e9)); err != nil {
		t.Fatal(err)
	}
	if err := p.Show(ctx, f); err != nil {
		t.Fatal(err)
	}
	if st2, _ := os.Stat(path); !st2.ModTime().Equal(st.ModTime().Add(-3600e9)) {
		t.Fatal("unchanged frame rewrote the file")
	}
}

func TestOpenTerminalAndErrors(t *testing.T) {
	ctx := context.Background()
	p, err := Open(ctx, "terminal:100x30")
	if err != nil {
		t.Fatal(err)
	}
	if b := p.Bounds(); b.Dx() != 100 || b.Dy() != 60 {
		t.Fatalf("terminal bounds %v", b)
	}
	for _, spec := range []string{"", "lcd:/dev/x", "ssd1306", "ssd1306:/dev/i2c-1:0xzz", "ssd1306:/dev/i2c-1:bogus", "png:", "terminal:80", "fb:"} {
		if _, err := Open(ctx, spec); err == nil {
			t.Errorf("%q accepted", spec)
		} else if !strings.Contains(err.Error(), "panel:") {
			t.Errorf("%q: unwrapped error %v", spec, err)
		}
	}
}
