//go:build linux

package panel

import (
	"fmt"
	"os"
	"unsafe"

	"golang.org/x/sys/unix"
)

// ioctl requests from <linux/fb.h>.
const (
	fbiogetVScreenInfo = 0x4600
	fbiogetFScreenInfo = 0x4602
)

type fbBitfield struct{ Offset, Length, MSBRight uint32 }

// fbVarScreenInfo mirrors struct fb_var_screeninfo.
type fbVarScreenInfo struct {
	XRes, YRes, XResVirtual, YResVirtual uint32
	XOffset, YOffset                     uint32
	BitsPerPixel, Grayscale              uint32
	Red, Green, Blue, Transp             fbBitfield
	NonStd, Activate, Height, Width      uint32
	AccelFlags, PixClock                 uint32
	LeftMargin, RightMargin              uint32
	UpperMargin, LowerMargin             uint32
	HSyncLen, VSyncLen, Sync, VMode      uint32
	Rotate, Colorspace                   uint32
	Reserved                             [4]uint32
}

// fbFixScreenInfo mirrors struct fb_fix_screeninfo; uintptr stands for
// C's unsigned long, so the layout is right on 32- and 64-bit ARM alike.
type fbFixScreenInfo struct {
	ID                             [16]byte
	SMemStart                      uintptr
	SMemLen, Type, TypeAux, Visual uint32
	XPanStep, YPanStep, YWrapStep  uint16
	LineLength                     uint32
	MMIOStart                      uintptr
	MMIOLen, Accel                 uint32
	Capabilities                   uint16
	Reserved                       [2]uint16
}

func ioctl(fd uintptr, req uintptr, arg unsafe.Pointer) error {
	if _, _, errno := unix.Syscall(unix.SYS_IOCTL, fd, req, uintptr(arg)); errno != 0 {
		return errno
	}
	return nil
}

// ReadFBGeometry asks an open framebuffer device for its geometry.
func ReadFBGeometry(f *os.File) (FBGeometry, error) {
	var v fbVarScreenInfo
	var x fbFixScreenInfo
	if err := ioctl(f.Fd(), fbiogetVScreenInfo, unsafe.Pointer(&v)); err != nil {
		return FBGeometry{}, fmt.Errorf("panel: FBIOGET_VSCREENINFO on %s: %w", f.Name(), err)
	}
	if err := ioctl(f.Fd(), fbiogetFScreenInfo, unsafe.Pointer(&x)); err != nil {
		return FBGeometry{}, fmt.Errorf("panel: FBIOGET_FSCREENINFO on %s: %w", f.Name(), err)
	}
	bf := func(b fbBitfield) Bitfield { return Bitfield{int(b.Offset), int(b.Length)} }
	return FBGeometry{
		Width: int(v.XRes), Height: int(v.YRes), BitsPerPixel: int(v.BitsPerPixel),
		LineLength: int(x.LineLength), XOffset: int(v.XOffset), YOffset: int(v.YOffset),
		Red: bf(v.Red), Green: bf(v.Green), Blue: bf(v.Blue),
	}, nil
}

// OpenFB opens a framebuffer device such as /dev/fb1 and reads its
// geometry. Writes go through the file with pwrite, no mmap.
func OpenFB(path string) (*FB, error) {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return nil, fmt.Errorf("panel: %w", err)
	}
	g, err := ReadFBGeometry(f)
	if err != nil {
		f.Close()
		return nil, err
	}
	fb, err := NewFB(f, g)
	if err != nil {
		f.Close()
		return nil, err
	}
	return fb, nil
}
