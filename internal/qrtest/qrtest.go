// Package qrtest reads QR symbols back from what tests capture: images,
// and text-terminal output drawn with the half blocks ▀ ▄ █ and SGR colour
// sequences (display.WriteHalfBlocks, display.Card.WriteTerminal, or a
// terminal multiplexer's screen dump such as "tmux capture-pane -p -e").
//
// It is a test helper: it panics on nothing and depends on gozxing, a port
// of the ZXing reader, so that a symbol is checked by a decoder that did
// not write it.
package qrtest

import (
	"fmt"
	"image"
	"image/color"
	"strconv"
	"strings"

	"github.com/makiuchi-d/gozxing"
	gzqr "github.com/makiuchi-d/gozxing/qrcode"
)

// Theme is a terminal's default colours, used where the output sets none.
type Theme struct{ FG, BG color.RGBA }

// Common themes.
var (
	DarkTheme  = Theme{FG: color.RGBA{0xd0, 0xd0, 0xd0, 255}, BG: color.RGBA{0x1e, 0x1e, 0x2e, 255}}
	LightTheme = Theme{FG: color.RGBA{0x30, 0x30, 0x30, 255}, BG: color.RGBA{0xfa, 0xfa, 0xf5, 255}}
)

// Cell is one character cell as a terminal shows it.
type Cell struct {
	R      rune
	FG, BG color.RGBA
}

// ParseTerminal interprets terminal output line by line: SGR sequences
// (ESC [ … m) with the reset, default, basic, bright, 256-colour and
// true-colour forms, reverse video, and the carriage return + erase-line
// (CR ESC [ K) with which display.Card.Live redraws its countdown. Other
// escape sequences are an error, so that a renderer cannot slip in
// sequences a terminal would misread.
func ParseTerminal(out string, th Theme) ([][]Cell, error) {
	var screen [][]Cell
	fg, bg := th.FG, th.BG
	reverse := false
	for _, line := range strings.Split(out, "\n") {
		var row []Cell
		for len(line) > 0 {
			switch {
			case strings.HasPrefix(line, "\r\x1b[K"):
				row = row[:0]
				line = line[len("\r\x1b[K"):]
			case line[0] == '\r':
				row = row[:0]
				line = line[1:]
			case strings.HasPrefix(line, "\x1b["):
				end := strings.IndexFunc(line[2:], func(r rune) bool { return r >= 0x40 && r <= 0x7e })
				if end < 0 || line[2+end] != 'm' {
					return nil, fmt.Errorf("qrtest: unexpected control sequence in %q", line)
				}
				var err error
				fg, bg, reverse, err = applySGR(line[2:2+end], fg, bg, reverse, th)
				if err != nil {
					return nil, err
				}
				line = line[2+end+1:]
			case line[0] < 0x20 && line[0] != '\t':
				return nil, fmt.Errorf("qrtest: unexpected control character in %q", line)
			default:
				r := []rune(line)[0]
				c := Cell{R: r, FG: fg, BG: bg}
				if reverse {
					c.FG, c.BG = bg, fg
				}
				row = append(row, c)
				line = line[len(string(r)):]
			}
		}
		screen = append(screen, row)
	}
	return screen, nil
}

func applySGR(params string, fg, bg color.RGBA, reverse bool, th Theme) (color.RGBA, color.RGBA, bool, error) {
	if params == "" {
		params = "0"
	}
	ps := strings.Split(params, ";")
	num := func(i int) (int, error) {
		if i >= len(ps) {
			return 0, fmt.Errorf("qrtest: short SGR %q", params)
		}
		return strconv.Atoi(ps[i])
	}
	for i := 0; i < len(ps); i++ {
		n, err := strconv.Atoi(ps[i])
		if err != nil {
			return fg, bg, reverse, fmt.Errorf("qrtest: SGR %q: %w", params, err)
		}
		switch {
		case n == 0:
			fg, bg, reverse = th.FG, th.BG, false
		case n == 7:
			reverse = true
		case n == 27:
			reverse = false
		case n == 39:
			fg = th.FG
		case n == 49:
			bg = th.BG
		case n >= 30 && n <= 37:
			fg = Palette(n - 30)
		case n >= 40 && n <= 47:
			bg = Palette(n - 40)
		case n >= 90 && n <= 97:
			fg = Palette(n - 90 + 8)
		case n >= 100 && n <= 107:
			bg = Palette(n - 100 + 8)
		case n == 38 || n == 48:
			mode, err := num(i + 1)
			if err != nil {
				return fg, bg, reverse, err
			}
			var c color.RGBA
			switch mode {
			case 5:
				idx, err := num(i + 2)
				if err != nil {
					return fg, bg, reverse, err
				}
				c, i = Palette(idx), i+2
			case 2:
				r, err1 := num(i + 2)
				g, err2 := num(i + 3)
				b, err3 := num(i + 4)
				if err1 != nil || err2 != nil || err3 != nil {
					return fg, bg, reverse, fmt.Errorf("qrtest: bad true-colour SGR %q", params)
				}
				c, i = color.RGBA{uint8(r), uint8(g), uint8(b), 255}, i+4
			default:
				return fg, bg, reverse, fmt.Errorf("qrtest: bad extended colour SGR %q", params)
			}
			if n == 38 {
				fg = c
			} else {
				bg = c
			}
		default:
			// Bold, italic, underline and the like do not change colours.
		}
	}
	return fg, bg, reverse, nil
}

// Palette returns xterm's colour for a 256-colour palette index (the 16
// basic colours as xterm's defaults).
func Palette(i int) color.RGBA {
	basic := [16][3]uint8{
		{0, 0, 0}, {205, 0, 0}, {0, 205, 0}, {205, 205, 0}, {0, 0, 238}, {205, 0, 205}, {0, 205, 205}, {229, 229, 229},
		{127, 127, 127}, {255, 0, 0}, {0, 255, 0}, {255, 255, 0}, {92, 92, 255}, {255, 0, 255}, {0, 255, 255}, {255, 255, 255},
	}
	switch {
	case i < 0 || i > 255:
		return color.RGBA{0, 0, 0, 255}
	case i < 16:
		return color.RGBA{basic[i][0], basic[i][1], basic[i][2], 255}
	case i < 232:
		i -= 16
		level := func(v int) uint8 {
			if v == 0 {
				return 0
			}
			return uint8(55 + 40*v)
		}
		return color.RGBA{level(i / 36), level(i / 6 % 6), level(i % 6), 255}
	}
	g := uint8(8 + 10*(i-232))
	return color.RGBA{g, g, g, 255}
}

// Pixels turns a screen into pixels, two per cell vertically (the half
// blocks), one per cell horizontally; other characters become their
// background.
func Pixels(screen [][]Cell, th Theme) *image.RGBA {
	w := 0
	for _, r := range screen {
		w = max(w, len(r))
	}
	img := image.NewRGBA(image.Rect(0, 0, w, 2*len(screen)))
	for y := range 2 * len(screen) {
		for x := range w {
			img.SetRGBA(x, y, th.BG)
		}
	}
	for cy, row := range screen {
		for cx, c := range row {
			top, bot := c.BG, c.BG
			switch c.R {
			case '█':
				top, bot = c.FG, c.FG
			case '▀':
				top = c.FG
			case '▄':
				bot = c.FG
			}
			img.SetRGBA(cx, 2*cy, top)
			img.SetRGBA(cx, 2*cy+1, bot)
		}
	}
	return img
}

// Decode reads a QR symbol with gozxing. The image is first enlarged 4×
// with nearest-neighbour sampling and framed with a 16-pixel border of its
// own corner colour: ZXing's binarizer and finder need a few pixels per
// module, which 1 px/module images do not give. The border keeps the
// corner colour, so it adds no quiet zone that the image does not have
// against a background of that colour.
func Decode(img image.Image) (string, error) {
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
	res, err := gzqr.NewQRCodeReader().Decode(bmp, map[gozxing.DecodeHintType]any{
		gozxing.DecodeHintType_TRY_HARDER: true,
	})
	if err != nil {
		return "", fmt.Errorf("qrtest: decoding: %w", err)
	}
	return res.GetText(), nil
}

// DecodeTerminal parses terminal output and decodes the QR symbol drawn in
// it, if any.
func DecodeTerminal(out string, th Theme) (string, error) {
	screen, err := ParseTerminal(out, th)
	if err != nil {
		return "", err
	}
	return Decode(Pixels(screen, th))
}
