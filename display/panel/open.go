package panel

import (
	"context"
	"fmt"
	"image"
	"os"
	"strconv"
	"strings"

	"periph.io/x/conn/v3/gpio"
	"periph.io/x/conn/v3/gpio/gpioreg"
	"periph.io/x/conn/v3/i2c/i2creg"
	"periph.io/x/conn/v3/spi/spireg"
	"periph.io/x/devices/v3/waveshare2in13v2"
	"periph.io/x/devices/v3/waveshare2in13v4"
	"periph.io/x/host/v3"

	"github.com/devicegrant/devicegrant/display"
)

// Open builds a panel from a spec string, KIND[:FIELD]..., as found in a
// configuration file:
//
//	ssd1306:/dev/i2c-1              SSD1306 128×64 on I²C bus 1 at 0x3C
//	ssd1306:/dev/i2c-1:0x3d:128x32  other address, 128×32 panel
//	sh1106:/dev/i2c-1:0x3c          SH1106 128×64 on I²C
//	ssd1306:/dev/spidev0.0:dc=GPIO24:rst=GPIO25
//	                                SSD1306 on SPI, D/C and reset pins
//	sh1106:SPI0.0:dc=GPIO24         SH1106 on SPI (periph aliases work)
//	epd                             Waveshare 2.13" V4 (or V3) HAT on /dev/spidev0.0
//	epd:/dev/spidev0.0:v2           the V2 panel
//	fb:/dev/fb1                     Linux framebuffer (RGB565 or XRGB8888)
//	png:/tmp/card.png:250x122       a PNG file, rewritten on change (default 250×122)
//	terminal                        stdout, 80×24 (80×48 pixels) by default
//	terminal:100x30                 stdout, 100 columns by 30 lines
//
// A bus is I²C if it is /dev/i2c-N or I2CN, SPI if /dev/spidevB.C or SPIB.C.
// Fields after the bus are, in any order: an I²C address (0x3c), a size
// (WxH), dc=PIN and rst=PIN (periph pin names such as GPIO24), and for epd
// the model v2, v3 or v4. The bus and pins need the periph.io host drivers,
// which Open initialises (host.Init) for the kinds that use them. File
// names cannot contain a colon. The Waveshare HAT's pins are fixed by the
// driver: DC GPIO25, CS GPIO8, RST GPIO17, BUSY GPIO24.
func Open(ctx context.Context, spec string) (Panel, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	kind, rest, _ := strings.Cut(spec, ":")
	var fields []string
	if rest != "" {
		fields = strings.Split(rest, ":")
	}
	p, err := open(kind, fields)
	if err != nil {
		return nil, fmt.Errorf("panel: %q: %w", spec, err)
	}
	return p, nil
}

// openOpts are the optional fields of a spec.
type openOpts struct {
	addr    uint16
	size    image.Point
	dc, rst string
	model   string
	rest    []string // fields not recognised
}

func parseFields(fields []string) (openOpts, error) {
	o := openOpts{addr: 0x3c}
	for _, f := range fields {
		switch {
		case strings.HasPrefix(f, "0x"):
			a, err := strconv.ParseUint(f, 0, 10)
			if err != nil {
				return o, fmt.Errorf("bad I²C address %q", f)
			}
			o.addr = uint16(a)
		case strings.HasPrefix(f, "dc="):
			o.dc = f[3:]
		case strings.HasPrefix(f, "rst="):
			o.rst = f[4:]
		case f == "v2" || f == "v3" || f == "v4":
			o.model = f
		default:
			if w, h, ok := parseSize(f); ok {
				o.size = image.Pt(w, h)
			} else {
				o.rest = append(o.rest, f)
			}
		}
	}
	return o, nil
}

func parseSize(s string) (int, int, bool) {
	a, b, ok := strings.Cut(s, "x")
	if !ok {
		return 0, 0, false
	}
	w, err1 := strconv.Atoi(a)
	h, err2 := strconv.Atoi(b)
	return w, h, err1 == nil && err2 == nil && w > 0 && h > 0
}

// optionalSize parses the last, optional field of a spec, WxH: fields is
// that field or nothing, and w, h are the size when it is absent.
func optionalSize(fields []string, w, h int) (int, int, error) {
	switch {
	case len(fields) > 1:
		return 0, 0, fmt.Errorf("too many fields")
	case len(fields) == 1:
		w, h, ok := parseSize(fields[0])
		if !ok {
			return 0, 0, fmt.Errorf("bad size %q", fields[0])
		}
		return w, h, nil
	}
	return w, h, nil
}

func isSPI(bus string) bool {
	return strings.HasPrefix(bus, "/dev/spidev") || strings.HasPrefix(bus, "SPI")
}

func open(kind string, fields []string) (Panel, error) {
	switch kind {
	case "ssd1306", "sh1106":
		if len(fields) == 0 {
			return nil, fmt.Errorf("%s needs a bus, e.g. %s:/dev/i2c-1", kind, kind)
		}
		o, err := parseFields(fields[1:])
		if err != nil {
			return nil, err
		}
		if len(o.rest) > 0 {
			return nil, fmt.Errorf("unknown fields %q", o.rest)
		}
		opts := OLEDOptions{Controller: SSD1306, Width: o.size.X, Height: o.size.Y}
		if kind == "sh1106" {
			opts.Controller = SH1106
		}
		return openOLED(fields[0], o, opts)
	case "epd":
		bus := "/dev/spidev0.0"
		if len(fields) > 0 && isSPI(fields[0]) {
			bus, fields = fields[0], fields[1:]
		}
		o, err := parseFields(fields)
		if err != nil {
			return nil, err
		}
		if len(o.rest) > 0 {
			return nil, fmt.Errorf("unknown fields %q", o.rest)
		}
		return openEPD(bus, o.model)
	case "fb":
		if len(fields) != 1 {
			return nil, fmt.Errorf("fb needs a device, e.g. fb:/dev/fb1")
		}
		return OpenFB(fields[0])
	case "png":
		if len(fields) == 0 || fields[0] == "" {
			return nil, fmt.Errorf("png needs a file name")
		}
		w, h, err := optionalSize(fields[1:], 250, 122)
		if err != nil {
			return nil, err
		}
		return NewPNGFile(fields[0], w, h), nil
	case "terminal":
		cols, rows, err := optionalSize(fields, 80, 24)
		if err != nil {
			return nil, err
		}
		mode := display.TermModeFor(os.Stdout)
		return NewTerminal(os.Stdout, cols, rows, mode, mode == display.TermColor), nil
	}
	return nil, fmt.Errorf("unknown panel kind %q (want ssd1306, sh1106, epd, fb, png or terminal)", kind)
}

func pin(name string) (gpio.PinIO, error) {
	p := gpioreg.ByName(name)
	if p == nil {
		return nil, fmt.Errorf("no GPIO pin %q", name)
	}
	return p, nil
}

func openOLED(bus string, o openOpts, opts OLEDOptions) (Panel, error) {
	if _, err := host.Init(); err != nil {
		return nil, fmt.Errorf("periph host: %w", err)
	}
	if !isSPI(bus) {
		b, err := i2creg.Open(bus)
		if err != nil {
			return nil, err
		}
		d, err := NewOLEDI2C(b, o.addr, opts)
		if err != nil {
			b.Close()
			return nil, err
		}
		d.closer = b
		return d, nil
	}
	if o.dc == "" {
		return nil, fmt.Errorf("SPI needs dc=PIN")
	}
	dc, err := pin(o.dc)
	if err != nil {
		return nil, err
	}
	var rst gpio.PinOut
	if o.rst != "" {
		if rst, err = pin(o.rst); err != nil {
			return nil, err
		}
	}
	p, err := spireg.Open(bus)
	if err != nil {
		return nil, err
	}
	d, err := NewOLEDSPI(p, dc, rst, opts)
	if err != nil {
		p.Close()
		return nil, err
	}
	d.closer = p
	return d, nil
}

func openEPD(bus, model string) (Panel, error) {
	if _, err := host.Init(); err != nil {
		return nil, fmt.Errorf("periph host: %w", err)
	}
	p, err := spireg.Open(bus)
	if err != nil {
		return nil, err
	}
	var dev interface {
		EPDDevice
		Init() error
	}
	switch model {
	case "v2":
		o := waveshare2in13v2.EPD2in13v2
		o.Origin = waveshare2in13v2.TopRight
		dev, err = waveshare2in13v2.NewHat(p, &o)
	default: // v3 and v4 share the controller; v4 adds fast refresh
		o := waveshare2in13v4.EPD2in13v4
		o.Origin = waveshare2in13v4.TopRight
		dev, err = waveshare2in13v4.NewHat(p, &o)
	}
	if err == nil {
		err = dev.Init()
	}
	if err != nil {
		p.Close()
		return nil, fmt.Errorf("e-paper: %w", err)
	}
	e := NewEPD(dev)
	e.closer = p
	return e, nil
}
