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

	"github.com/makiuchi-d/gozxing"
	gzqr "github.com/makiuchi-d/gozxing/qrcode"
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

// decode reads a QR symbol with the gozxing reader (a port of ZXing). The
// image is first enlarged 4× with nearest-neighbour sampling and framed with
// a 16-pixel border of its own corner colour: ZXing's binarizer and finder
// need a few pixels per module, which 1 px/module panel images do not give.
// The border keeps the corner colour, so it adds no quiet zone that the
// image does not have against a background of that colour.
func decode(img image.Image) (string, error) {
	const k, border = 4, 16
	b := img.Bounds()
	corner := color.GrayModel.Convert(img.At(b.Min.X, b.Min.Y)).(color.Gray)
	big := image.NewGray(image.Rect(0, 0, b.Dx()*k+2*border, b.Dy()*k+2*border))
	for i := range big.Pix {
		big.Pix[i] = corner.Y
	}
	for y := 0; y < b.Dy()*k; y++ {
		for x := 0; x < b.Dx()*k; x++ {
			big.Set(x+border, y+border, img.At(b.Min.X+x/k, b.Min.Y+y/k))
		}
	}
	bmp, err := gozxing.NewBinaryBitmapFromImage(big)
	if err != nil {
		return "", err
	}
	res, err := gzqr.NewQRCodeReader().Decode(bmp, map[gozxing.DecodeHintType]interface{}{
		gozxing.DecodeHintType_TRY_HARDER: true,
	})
	if err != nil {
		return "", err
	}
	return res.GetText(), nil
}

func mustDecode(t *testing.T, what string, img image.Image, want string) {
	t.Helper()
	got, err := decode(img)
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

// Terminal simulation. A theme gives the default colours; the card's SGR
// sequence switches to its explicit black on white until the reset.
type theme struct{ fg, bg color.RGBA }

var (
	darkTheme  = theme{fg: color.RGBA{0xd0, 0xd0, 0xd0, 255}, bg: color.RGBA{0x1e, 0x1e, 0x2e, 255}}
	lightTheme = theme{fg: color.RGBA{0x30, 0x30, 0x30, 255}, bg: color.RGBA{0xfa, 0xfa, 0xf5, 255}}
)

// termCell is one character cell as a terminal would show it.
type termCell struct {
	r      rune
	fg, bg color.RGBA
}

// parseTerminal interprets the output of WriteTerminal/WriteHalfBlocks:
// it accepts only the card's SGR sequence and the reset, and the carriage
// return + erase-line of Live.
func parseTerminal(out string, th theme) ([][]termCell, error) {
	var screen [][]termCell
	for _, line := range strings.Split(out, "\n") {
		var row []termCell
		fg, bg := th.fg, th.bg
		for len(line) > 0 {
			switch {
			case strings.HasPrefix(line, sgrCard):
				fg, bg = color.RGBA{0, 0, 0, 255}, color.RGBA{255, 255, 255, 255}
				line = line[len(sgrCard):]
			case strings.HasPrefix(line, sgrReset):
				fg, bg = th.fg, th.bg
				line = line[len(sgrReset):]
			case strings.HasPrefix(line, "\r\x1b[K"):
				row = row[:0]
				line = line[len("\r\x1b[K"):]
			case line[0] == 0x1b || line[0] == '\r':
				return nil, fmt.Errorf("unexpected control sequence in %q", line)
			default:
				r, n := []rune(line)[0], len(string([]rune(line)[0]))
				row = append(row, termCell{r, fg, bg})
				line = line[n:]
			}
		}
		screen = append(screen, row)
	}
	return screen, nil
}

// termPixels turns a screen into pixels, two per cell vertically (the half
// blocks), one per cell horizontally; letters become their background.
func termPixels(screen [][]termCell, th theme) *image.RGBA {
	w := 0
	for _, r := range screen {
		w = max(w, len(r))
	}
	img := image.NewRGBA(image.Rect(0, 0, w, 2*len(screen)))
	for y := range 2 * len(screen) {
		for x := range w {
			img.SetRGBA(x, y, th.bg)
		}
	}
	for cy, row := range screen {
		for cx, c := range row {
			top, bot := c.bg, c.bg
			switch c.r {
			case '█':
				top, bot = c.fg, c.fg
			case '▀':
				top = c.fg
			case '▄':
				bot = c.fg
			}
			img.SetRGBA(cx, 2*cy, top)
			img.SetRGBA(cx, 2*cy+1, bot)
		}
	}
	return img
}

// termScreenshot draws a screen as a terminal would, 12×24 pixels per cell,
// letters in the package's 5×7 font at scale 2.
func termScreenshot(screen [][]termCell, th theme) *image.RGBA {
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
	fill(0, 0, img.Bounds().Dx(), img.Bounds().Dy(), th.bg)
	for cy, row := range screen {
		for cx, c := range row {
			x, y := (cx+1)*cw, (cy+1)*ch
			fill(x, y, x+cw, y+ch, c.bg)
			switch c.r {
			case '█':
				fill(x, y, x+cw, y+ch, c.fg)
			case '▀':
				fill(x, y, x+cw, y+ch/2, c.fg)
			case '▄':
				fill(x, y+ch/2, x+cw, y+ch, c.fg)
			case ' ':
			default:
				for gy := 0; gy < glyphH; gy++ {
					for gx := 0; gx < glyphW; gx++ {
						if glyphInk(c.r, gx, gy) {
							fill(x+1+2*gx, y+5+2*gy, x+3+2*gx, y+7+2*gy, c.fg)
						}
					}
				}
			}
		}
	}
	return img
}
