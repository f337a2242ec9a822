package panel

import (
	"context"
	"errors"
	"fmt"
	"image"
	"io"
	"sync"
	"time"

	"periph.io/x/conn/v3/gpio"
	"periph.io/x/conn/v3/i2c"
	"periph.io/x/conn/v3/physic"
	"periph.io/x/conn/v3/spi"
)

// Controller is an OLED controller chip.
type Controller int

// Supported controllers. Both use the same page-addressing commands; the
// SH1106 has 132 columns of RAM of which a 128-pixel panel shows columns
// 2 to 129, and has no horizontal addressing mode.
const (
	SSD1306 Controller = iota + 1
	SH1106
)

// String returns "ssd1306" or "sh1106".
func (c Controller) String() string {
	if c == SH1106 {
		return "sh1106"
	}
	return "ssd1306"
}

// OLEDOptions describe the panel. The zero value is a 128×64 SSD1306.
type OLEDOptions struct {
	Controller Controller
	// Width and Height in pixels; zero means 128×64. Height must be a
	// multiple of 8 (32 or 64), Width at most 128.
	Width, Height int
}

func (o OLEDOptions) norm() (OLEDOptions, error) {
	if o.Controller == 0 {
		o.Controller = SSD1306
	}
	if o.Width == 0 && o.Height == 0 {
		o.Width, o.Height = 128, 64
	}
	if o.Width < 1 || o.Width > 128 || o.Height < 8 || o.Height > 64 || o.Height%8 != 0 {
		return o, fmt.Errorf("panel: unsupported %v size %d×%d", o.Controller, o.Width, o.Height)
	}
	return o, nil
}

// OLED drives an SSD1306 or SH1106 panel. It is a small driver of its own
// rather than periph.io/x/devices/v3/ssd1306 because it needs exact control
// of the bytes: the same page-addressing code serves both controllers (the
// periph driver has no SH1106 support and uses horizontal addressing), and
// it remembers what the panel shows so that an unchanged page sends
// nothing at all. It is safe for concurrent use.
type OLED struct {
	mu     sync.Mutex
	opts   OLEDOptions
	tr     transport
	shown  []byte // page-order bytes the panel shows; nil until first Show
	closer io.Closer
}

// transport sends commands and display data to the controller.
type transport interface {
	command(c ...byte) error
	data(d []byte) error
}

// i2cTransport prefixes each write with the control byte: 0x00 for a run
// of commands, 0x40 for a run of data (Co = 0, D/C# = 0 or 1).
type i2cTransport struct{ d *i2c.Dev }

func (t i2cTransport) command(c ...byte) error {
	return t.d.Tx(append([]byte{0x00}, c...), nil)
}

func (t i2cTransport) data(d []byte) error {
	return t.d.Tx(append([]byte{0x40}, d...), nil)
}

// spiTransport drives D/C# low for commands and high for data (4-wire SPI).
type spiTransport struct {
	c  spi.Conn
	dc gpio.PinOut
}

func (t spiTransport) command(c ...byte) error {
	if err := t.dc.Out(gpio.Low); err != nil {
		return err
	}
	return t.c.Tx(c, nil)
}

func (t spiTransport) data(d []byte) error {
	if err := t.dc.Out(gpio.High); err != nil {
		return err
	}
	return t.c.Tx(d, nil)
}

// NewOLEDI2C initialises the panel at addr (usually 0x3C, or 0x3D) on b.
// Closing the OLED does not close b.
func NewOLEDI2C(b i2c.Bus, addr uint16, opts OLEDOptions) (*OLED, error) {
	return newOLED(i2cTransport{&i2c.Dev{Bus: b, Addr: addr}}, opts)
}

// NewOLEDSPI initialises the panel on p in 4-wire mode: dc is the D/C#
// pin (required); rst, if not nil, is pulsed low for 10 ms first. The bus
// runs at 4 MHz, mode 0. Closing the OLED does not close p.
func NewOLEDSPI(p spi.Port, dc, rst gpio.PinOut, opts OLEDOptions) (*OLED, error) {
	if dc == nil {
		return nil, errors.New("panel: SPI OLED needs a D/C pin")
	}
	if rst != nil {
		for _, l := range []gpio.Level{gpio.High, gpio.Low, gpio.High} {
			if err := rst.Out(l); err != nil {
				return nil, fmt.Errorf("panel: reset pin: %w", err)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	c, err := p.Connect(4*physic.MegaHertz, spi.Mode0, 8)
	if err != nil {
		return nil, fmt.Errorf("panel: SPI: %w", err)
	}
	return newOLED(spiTransport{c, dc}, opts)
}

func newOLED(tr transport, opts OLEDOptions) (*OLED, error) {
	opts, err := opts.norm()
	if err != nil {
		return nil, err
	}
	if err := tr.command(InitSequence(opts)...); err != nil {
		return nil, fmt.Errorf("panel: %v init: %w", opts.Controller, err)
	}
	return &OLED{opts: opts, tr: tr}, nil
}

// InitSequence returns the command bytes sent once at start-up: display
// off, clock, multiplex ratio (height-1), offset 0, start line 0, charge
// pump (SSD1306: 0x8D 0x14) or DC-DC (SH1106: 0xAD 0x8B), page addressing
// (SSD1306: 0x20 0x02), segment remap and COM scan direction for a panel
// mounted pins-up (0xA1, 0xC8), COM pin layout (0x12 for 64 rows, 0x02
// for 32 on SSD1306), contrast, pre-charge, VCOMH, resume from RAM, normal
// (not inverted), display on.
func InitSequence(opts OLEDOptions) []byte {
	opts, _ = opts.norm()
	// SSD1306: charge pump on, page addressing mode.
	power := []byte{0x8D, 0x14, 0x20, 0x02}
	com, contrast, precharge, vcomh := byte(0x12), byte(0xCF), byte(0xF1), byte(0x40)
	if opts.Height == 32 {
		com = 0x02
	}
	if opts.Controller == SH1106 {
		power = []byte{0xAD, 0x8B} // DC-DC on
		com, contrast, precharge, vcomh = 0x12, 0x80, 0x22, 0x35
	}
	seq := []byte{
		0xAE,       // display off
		0xD5, 0x80, // clock divide / oscillator
		0xA8, byte(opts.Height - 1), // multiplex ratio
		0xD3, 0x00, // display offset
		0x40, // start line 0
	}
	seq = append(seq, power...)
	return append(seq,
		0xA1,      // segment remap
		0xC8,      // COM scan from COM[N-1]
		0xDA, com, // COM pins
		0x81, contrast, // contrast
		0xD9, precharge, // pre-charge
		0xDB, vcomh, // VCOMH
		0xA4, // output follows RAM
		0xA6, // normal, not inverted
		0xAF, // display on
	)
}

// ColumnOffset is the RAM column of the panel's leftmost pixel: 0 on an
// SSD1306, 2 on an SH1106 (132-column RAM, 128 columns visible).
func ColumnOffset(c Controller) int {
	if c == SH1106 {
		return 2
	}
	return 0
}

// Bounds implements Panel.
func (o *OLED) Bounds() image.Rectangle { return image.Rect(0, 0, o.opts.Width, o.opts.Height) }

// Show implements Panel: it sends, page by page, only the span of columns
// that differ from what the panel shows (all of them the first time), as
// 0xB0|page, 0x00|low nibble, 0x10|high nibble of the column, then data.
func (o *OLED) Show(ctx context.Context, img image.Image) error {
	pages, err := toFrame(img, o.Bounds().Max).Pages()
	if err != nil {
		return err
	}
	return o.write(ctx, pages)
}

// ShowPages is Show for bytes already in page order ([display.Frame.Pages]),
// Width×Height/8 of them.
func (o *OLED) ShowPages(ctx context.Context, pages []byte) error {
	if len(pages) != o.opts.Width*o.opts.Height/8 {
		return fmt.Errorf("panel: %d page bytes for a %d×%d panel", len(pages), o.opts.Width, o.opts.Height)
	}
	return o.write(ctx, pages)
}

// Clear implements Panel: every pixel off.
func (o *OLED) Clear(ctx context.Context) error {
	return o.write(ctx, make([]byte, o.opts.Width*o.opts.Height/8))
}

func (o *OLED) write(ctx context.Context, pages []byte) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	w := o.opts.Width
	if o.shown == nil {
		o.shown = make([]byte, len(pages))
		for i := range o.shown {
			o.shown[i] = ^pages[i] // unknown RAM: force a full write
		}
	}
	for p := 0; p < o.opts.Height/8; p++ {
		if err := ctx.Err(); err != nil {
			return err
		}
		row, old := pages[p*w:(p+1)*w], o.shown[p*w:(p+1)*w]
		first, last := -1, -1
		for x := range row {
			if row[x] != old[x] {
				if first < 0 {
					first = x
				}
				last = x
			}
		}
		if first < 0 {
			continue
		}
		col := first + ColumnOffset(o.opts.Controller)
		if err := o.tr.command(0xB0|byte(p), byte(col&0x0F), 0x10|byte(col>>4)); err != nil {
			return fmt.Errorf("panel: %v page %d: %w", o.opts.Controller, p, err)
		}
		if err := o.tr.data(row[first : last+1]); err != nil {
			return fmt.Errorf("panel: %v page %d: %w", o.opts.Controller, p, err)
		}
		copy(old[first:last+1], row[first:last+1])
	}
	return nil
}

// Close implements Panel: it turns the display off (0xAE) and closes the
// bus if Open opened it.
func (o *OLED) Close() error {
	o.mu.Lock()
	defer o.mu.Unlock()
	err := o.tr.command(0xAE)
	if o.closer != nil {
		err = errors.Join(err, o.closer.Close())
	}
	if err != nil {
		return fmt.Errorf("panel: closing %v: %w", o.opts.Controller, err)
	}
	return nil
}
