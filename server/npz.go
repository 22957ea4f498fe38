package server

// NumPy's .npz archive for POST /inspect/attention?format=npz: a zip of .npy
// files (format version 1.0), one per array, stored uncompressed as
// numpy.savez writes them, so numpy.load reads the answer with no
// conversion. Written straight to the response through a small buffer.

import (
	"archive/zip"
	"encoding/binary"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
)

// npyAlign is the multiple of bytes numpy pads a .npy header to, so the data
// that follows can be memory-mapped aligned.
const npyAlign = 64

// npyHeader is the .npy preamble for a little-endian array of the given
// dtype ("<f4", "<i4") and shape, in C order.
func npyHeader(dtype string, shape []int) []byte {
	dims := make([]string, len(shape))
	for i, d := range shape {
		dims[i] = strconv.Itoa(d)
	}
	tuple := "(" + strings.Join(dims, ", ") + ")"
	if len(shape) == 1 {
		tuple = "(" + dims[0] + ",)" // a 1-tuple in Python's spelling
	}
	dict := "{'descr': '" + dtype + "', 'fortran_order': False, 'shape': " + tuple + ", }"
	// magic (6) + version (2) + header length (2) + dict + padding + '\n'
	total := 10 + len(dict) + 1
	pad := (npyAlign - total%npyAlign) % npyAlign
	h := make([]byte, 0, total+pad)
	h = append(h, "\x93NUMPY\x01\x00"...)
	h = binary.LittleEndian.AppendUint16(h, uint16(len(dict)+pad+1))
	h = append(h, dict...)
	h = append(h, strings.Repeat(" ", pad)...)
	return append(h, '\n')
}

// attentionShape checks that attn is (layers, heads, t, t) with t the
// number of tokens, and returns heads.
func attentionShape(attn [][][][]float32, layers, t int) (int, error) {
	if len(attn) != layers {
		return 0, fmt.Errorf("attention has %d layers, want %d", len(attn), layers)
	}
	heads := -1
	for l, hs := range attn {
		if heads < 0 {
			heads = len(hs)
		}
		if len(hs) != heads {
			return 0, fmt.Errorf("layer %d has %d heads, want %d", l, len(hs), heads)
		}
		for h, rows := range hs {
			if len(rows) != t {
				return 0, fmt.Errorf("layer %d head %d has %d rows, want %d", l, h, len(rows), t)
			}
			for i, row := range rows {
				if len(row) != t {
					return 0, fmt.Errorf("layer %d head %d row %d has %d entries, want %d", l, h, i, len(row), t)
				}
			}
		}
	}
	return max(heads, 0), nil
}

// writeNPZ writes the archive: attn float32 (layers, H, t, t), token_ids
// int32 (t,) and layers int32 (layers,).
func writeNPZ(w io.Writer, layers, ids []int, attn [][][][]float32) error {
	heads, err := attentionShape(attn, len(layers), len(ids))
	if err != nil {
		return err
	}
	z := zip.NewWriter(w)
	buf := make([]byte, 0, attentionFlushBytes+4)
	entry := func(name string) (io.Writer, error) {
		return z.CreateHeader(&zip.FileHeader{Name: name, Method: zip.Store})
	}

	f, err := entry("attn.npy")
	if err != nil {
		return err
	}
	buf = append(buf, npyHeader("<f4", []int{len(layers), heads, len(ids), len(ids)})...)
	for _, hs := range attn {
		for _, rows := range hs {
			for _, row := range rows {
				for _, x := range row {
					buf = binary.LittleEndian.AppendUint32(buf, math.Float32bits(x))
					if len(buf) >= attentionFlushBytes {
						if _, err := f.Write(buf); err != nil {
							return err
						}
						buf = buf[:0]
					}
				}
			}
		}
	}
	if _, err := f.Write(buf); err != nil {
		return err
	}

	for _, arr := range []struct {
		name   string
		values []int
	}{{"token_ids.npy", ids}, {"layers.npy", layers}} {
		f, err := entry(arr.name)
		if err != nil {
			return err
		}
		b := npyHeader("<i4", []int{len(arr.values)})
		for _, v := range arr.values {
			b = binary.LittleEndian.AppendUint32(b, uint32(int32(v)))
		}
		if _, err := f.Write(b); err != nil {
			return err
		}
	}
	return z.Close()
}
