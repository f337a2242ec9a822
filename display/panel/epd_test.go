package panel

import (
	"context"
	"testing"

	"periph.io/x/conn/v3/gpio"
	"periph.io/x/conn/v3/gpio/gpiotest"
	"periph.io/x/conn/v3/spi/spitest"
	"periph.io/x/devices/v3/waveshare2in13v4"

	"github.com/devicegrant/devicegrant/display"
)

func displayOpts() display.LayoutOptions { return display.LayoutOptions{} }

// The real periph driver on a recording SPI port with fake pins (BUSY
// low, i.e. ready): the first frame is sent, the same frame again sends
// nothing, another frame is sent.
func TestEPD(t *testing.T) {
	ctx := context.Background()
	rec := &spitest.Record{}
	pin := func(n string) *gpiotest.Pin { return &gpiotest.Pin{N: n, EdgesChan: make(chan gpio.Level, 1)} }
	o := waveshare2in13v4.EPD2in13v4
	o.Origin = waveshare2in13v4.TopRight
	dev, err := waveshare2in13v4.New(rec, pin("DC"), pin("CS"), pin("RST"), pin("BUSY"), &o)
	if err != nil {
		t.Fatal(err)
	}
	e := NewEPD(dev)
	if b := e.Bounds(); b.Dx() != 250 || b.Dy() != 122 {
		t.Fatalf("bounds %v, want 250×122 landscape", b)
	}
	f, fit, err := card().Layout(250, 122, display.LayoutOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("250×122: %v", fit)
	if err := e.Show(ctx, f); err != nil {
		t.Fatal(err)
	}
	n := len(rec.Ops)
	if n == 0 {
		t.Fatal("first frame sent nothing")
	}
	if err := e.Show(ctx, f); err != nil || len(rec.Ops) != n {
		t.Fatalf("same frame: err %v, %d transfers", err, len(rec.Ops)-n)
	}
	c := card()
	c.UserCode = "BCDF-GHJX"
	g, _, _ := c.Layout(250, 122, display.LayoutOptions{})
	if err := e.Show(ctx, g); err != nil || len(rec.Ops) == n {
		t.Fatalf("new frame: err %v, nothing sent", err)
	}
}
