package display

import (
	"bufio"
	"bytes"
	"fmt"
	"image"
	"image/color"
	"io"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/devicegrant/devicegrant/internal/qrtest"
)

// testURIs are the verification URIs every renderer is checked with.
var testURIs = []string{
	"HTTPS://AUTH.EXAMPLE.ORG/D/BCDFGHJK",
	"HTTP://127.0.0.1:8080/D/BCDFGHJK",
	"https://auth.example.org/d/bcdfghjk",
	"https://auth.example.org/device?user_code=BCDF-GHJK",
	"https://pairing.devices.a-much-longer-hostname.example.org/device?user_code=BCDF-GHJK&client=thermostat",
}

// testNow is a fixed clock: the card expires 9:41 later.
var testNow = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func testCard(uri string) Card {
	return Card{URI: uri, UserCode: "BCDF-GHJK", ShortURI: "https://auth.example.org/device",
		Expires: testNow.Add(9*time.Minute + 41*time.Second)}
}

func mustDecode(t *testing.T, what string, img image.Image, want string) {
	t.Helper()
	got, err := qrtest.Decode(img)
	if err != nil {
		t.Fatalf("%s: decoding %q: %v", what, want, err)
	}
	if got != want {
		t.Fatalf("%s: decoded %q, want %q", what, got, want)
	}
}

// parsePBM reads a P4 or P1 file into a grey image (1 = black), without
// using Frame.
func parsePBM(data []byte) (*image.Gray, error) {
	r := bufio.NewReader(bytes.NewReader(data))
	var magic string
	var w, h int
	if _, err := fmt.Fscan(r, &magic, &w, &h); err != nil {
		return nil, err
	}
	img := image.NewGray(image.Rect(0, 0, w, h))
	switch magic {
	case "P4":
		if _, err := r.ReadByte(); err != nil { // the single whitespace
			return nil, err
		}
		stride := (w + 7) / 8
		raster := make([]byte, stride*h)
		if _, err := io.ReadFull(r, raster); err != nil {
			return nil, err
		}
		if rest, _ := r.Peek(1); len(rest) != 0 {
			return nil, fmt.Errorf("trailing bytes after raster")
		}
		for y := 0; y < h; y++ {
			for x := 0; x < w; x++ {
				v := uint8(255)
				if raster[y*stride+x/8]>>(7-x%8)&1 == 1 {
					v = 0
				}
				img.Pix[y*img.Stride+x] = v
			}
		}
	default:
		return nil, fmt.Errorf("magic %q", magic)
	}
	return img, nil
}

var (
	svgRoot = regexp.MustCompile(`<svg [^>]*width="(\d+)" height="(\d+)"`)
	svgQR   = regexp.MustCompile(`(?s)<g id="qr" fill="#000000">(.*?)</g>`)
	svgRect = regexp.MustCompile(`<rect x="(\d+)" y="(\d+)" width="(\d+)" height="(\d+)"/>`)
)

// rasteriseSVG paints the black rects of the "qr" group of an SVG written
// by WriteSVG on a white canvas of the document's size.
func rasteriseSVG(doc string) (*image.Gray, error) {
	m := svgRoot.FindStringSubmatch(doc)
	if m == nil {
		return nil, fmt.Errorf("no <svg> size")
	}
	w, _ := strconv.Atoi(m[1])
	h, _ := strconv.Atoi(m[2])
	img := image.NewGray(image.Rect(0, 0, w, h))
	for i := range img.Pix {
		img.Pix[i] = 255
	}
	g := svgQR.FindStringSubmatch(doc)
	if g == nil {
		return nil, fmt.Errorf("no qr group")
	}
	rects := svgRect.FindAllStringSubmatch(g[1], -1)
	if len(rects) == 0 {
		return nil, fmt.Errorf("no rects")
	}
	for _, r := range rects {
		var v [4]int
		for i := range v {
			v[i], _ = strconv.Atoi(r[i+1])
		}
		for y := v[1]; y < v[1]+v[3]; y++ {
			for x := v[0]; x < v[0]+v[2]; x++ {
				img.SetGray(x, y, color.Gray{0})
			}
		}
	}
	return img, nil
}

// pagesToImage decodes SSD1306 page-order bytes (bit set = lit = white)
// without using the package's own decoder.
func pagesToImage(pages []byte, w, h int) *image.Gray {
	img := image.NewGray(image.Rect(0, 0, w, h))
	for i, b := range pages {
		page, x := i/w, i%w
		for bit := 0; bit < 8; bit++ {
			if b>>bit&1 == 1 {
				img.SetGray(x, page*8+bit, color.Gray{255})
			}
		}
	}
	return img
}

// parseTerminal reads the output of WriteTerminal/WriteHalfBlocks/Live
// with qrtest.ParseTerminal, after checking that it holds no control
// sequence but the card's SGR sequence, the reset, and the carriage return
// + erase-line of Live: qrtest accepts any SGR sequence, this package
// writes only those.
func parseTerminal(out string, th qrtest.Theme) ([][]qrtest.Cell, error) {
	rest := strings.NewReplacer(sgrCard, "", sgrReset, "", "\r\x1b[K", "").Replace(out)
	if i := strings.IndexAny(rest, "\x1b\r"); i >= 0 {
		return nil, fmt.Errorf("unexpected control sequence in %q", rest[i:])
	}
	return qrtest.ParseTerminal(out, th)
}

// termScreenshot draws a screen as a terminal would, 12×24 pixels per cell,
// letters in the package's 5×7 font at scale 2.
func termScreenshot(screen [][]qrtest.Cell, th qrtest.Theme) *image.RGBA {
	const cw, ch = 12, 24
	w := 0
	for _, r := range screen {
		w = max(w, len(r))
	}
	w += 2
	img := image.NewRGBA(image.Rect(0, 0, w*cw, (len(screen)+2)*ch))
	fill := func(x0, y0, x1, y1 int, c color.RGBA) {
		for y := y0; y < y1; y++ {
			for x := x0; x < x1; x++ {
				img.SetRGBA(x, y, c)
			}
		}
	}
	fill(0, 0, img.Bounds().Dx(), img.Bounds().Dy(), th.BG)
	for cy, row := range screen {
		for cx, c := range row {
			x, y := (cx+1)*cw, (cy+1)*ch
			fill(x, y, x+cw, y+ch, c.BG)
			switch c.R {
			case '█':
				fill(x, y, x+cw, y+ch, c.FG)
			case '▀':
				fill(x, y, x+cw, y+ch/2, c.FG)
			case '▄':
				fill(x, y+ch/2, x+cw, y+ch, c.FG)
			case ' ':
			default:
				for gy := 0; gy < glyphH; gy++ {
					for gx := 0; gx < glyphW; gx++ {
						if glyphInk(c.R, gx, gy) {
							fill(x+1+2*gx, y+5+2*gy, x+3+2*gx, y+7+2*gy, c.FG)
						}
					}
				}
			}
		}
	}
	return img
}
