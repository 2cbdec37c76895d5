package bundle

import (
	"bufio"
	"encoding/binary"
	"io"
)

// Zip record signatures and fixed lengths (APPNOTE 4.3), as archive/zip
// uses them.
const (
	zipDirHeaderSig  = 0x02014b50
	zipDirEndSig     = 0x06054b50
	zipDir64LocSig   = 0x07064b50
	zipDir64EndSig   = 0x06064b50
	zip64ExtraID     = 0x0001
	zipDirHeaderLen  = 46
	zipDirEndLen     = 22
	zipDir64LocLen   = 20
	zipDir64EndLen   = 56
	zipMaxInt64      = 1<<63 - 1
	zipScanBufSize   = 4096
	zipEndSearchNear = 1024
	zipEndSearchFar  = 65 * 1024
)

// zipDirectoryEntries counts the central-directory records archive/zip
// will load from r, stopping once it has seen more than limit. archive/zip
// keeps every record in memory and checks the declared count only modulo
// 65536, so without this a small hostile zip could make it allocate in
// proportion to the file size before MaxFiles is ever checked.
//
// It mirrors archive/zip's own reading (readDirectoryEnd and the header
// loop in Reader.init). When that mirror cannot find a directory it reports
// ok=false and leaves archive/zip to produce the error.
func zipDirectoryEntries(r io.ReaderAt, size int64, limit int) (n int, ok bool) {
	start, ok := zipDirectoryStart(r, size)
	if !ok {
		return 0, false
	}
	br := bufio.NewReaderSize(io.NewSectionReader(r, start, size-start), zipScanBufSize)
	var scratch []byte
	for n <= limit && zipDirHeaderOK(br, &scratch) {
		n++
	}
	return n, true
}

// zipDirectoryStart finds the offset of the first central-directory
// header the way archive/zip's readDirectoryEnd does.
func zipDirectoryStart(r io.ReaderAt, size int64) (int64, bool) {
	var buf []byte
	var endOff int64 = -1
	for _, l := range []int64{zipEndSearchNear, zipEndSearchFar} {
		l = min(l, size)
		buf = make([]byte, l)
		if _, err := r.ReadAt(buf, size-l); err != nil && err != io.EOF {
			return 0, false
		}
		if p := findZipDirEnd(buf); p >= 0 {
			buf = buf[p:]
			endOff = size - l + int64(p)
			break
		}
		if l == size {
			break
		}
	}
	if endOff < 0 {
		return 0, false
	}
	records := uint64(binary.LittleEndian.Uint16(buf[10:]))
	dirSize := uint64(binary.LittleEndian.Uint32(buf[12:]))
	dirOff := uint64(binary.LittleEndian.Uint32(buf[16:]))
	if records == 0xffff || dirSize == 0xffff || dirOff == 0xffffffff {
		p, found := findZipDir64End(r, endOff)
		if found {
			var rec [zipDir64EndLen]byte
			if _, err := r.ReadAt(rec[:], p); err != nil {
				return 0, false
			}
			if binary.LittleEndian.Uint32(rec[0:]) != zipDir64EndSig {
				return 0, false
			}
			endOff = p
			dirSize = binary.LittleEndian.Uint64(rec[40:])
			dirOff = binary.LittleEndian.Uint64(rec[48:])
		}
	}
	if dirSize > zipMaxInt64 || dirOff > zipMaxInt64 {
		return 0, false
	}
	base := endOff - int64(dirSize) - int64(dirOff)
	if o := base + int64(dirOff); o < 0 || o >= size {
		return 0, false
	}
	// archive/zip falls back to a zero base when the declared one is
	// positive but a valid header sits at the undisplaced offset.
	if base > 0 {
		off := int64(dirOff)
		var scratch []byte
		if zipDirHeaderOK(io.NewSectionReader(r, off, size-off), &scratch) {
			base = 0
		}
	}
	return base + int64(dirOff), true
}

// zipDirHeaderOK reads one central-directory header from r and reports
// whether archive/zip's readDirectoryHeader would accept it: right
// signature, all variable-length parts present, and zip64 values present
// where the 32-bit fields defer to them. scratch is reused between calls so
// the scan allocates at most one header's worth.
func zipDirHeaderOK(r io.Reader, scratch *[]byte) bool {
	var hdr [zipDirHeaderLen]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return false
	}
	le := binary.LittleEndian
	if le.Uint32(hdr[0:]) != zipDirHeaderSig {
		return false
	}
	nameLen, extraLen, commentLen := int(le.Uint16(hdr[28:])), int(le.Uint16(hdr[30:])), int(le.Uint16(hdr[32:]))
	need := nameLen + extraLen + commentLen
	if cap(*scratch) < need {
		*scratch = make([]byte, need)
	}
	d := (*scratch)[:need]
	if _, err := io.ReadFull(r, d); err != nil {
		return false
	}
	// Sizes and offset of 0xffffffff are stored in the zip64 extra field,
	// which archive/zip reads value by value, failing if it runs short; a
	// missing compressed size or offset is an error, a missing uncompressed
	// size is not (42.zip).
	needU := le.Uint32(hdr[24:]) == ^uint32(0)
	needC := le.Uint32(hdr[20:]) == ^uint32(0)
	needO := le.Uint32(hdr[42:]) == ^uint32(0)
	for extra := d[nameLen : nameLen+extraLen]; len(extra) >= 4; {
		tag, fieldLen := le.Uint16(extra[0:]), int(le.Uint16(extra[2:]))
		extra = extra[4:]
		if len(extra) < fieldLen {
			break
		}
		field := extra[:fieldLen]
		extra = extra[fieldLen:]
		if tag != zip64ExtraID {
			continue
		}
		for _, need := range []*bool{&needU, &needC, &needO} {
			if !*need {
				continue
			}
			*need = false
			if len(field) < 8 {
				return false
			}
			field = field[8:]
		}
	}
	return !needC && !needO
}

// findZipDirEnd is archive/zip's findSignatureInBlock: the last end
// record in b whose comment fits, or -1.
func findZipDirEnd(b []byte) int {
	for i := len(b) - zipDirEndLen; i >= 0; i-- {
		if binary.LittleEndian.Uint32(b[i:]) == zipDirEndSig {
			n := int(binary.LittleEndian.Uint16(b[i+zipDirEndLen-2:]))
			if n+zipDirEndLen+i > len(b) {
				return -1
			}
			return i
		}
	}
	return -1
}

// findZipDir64End reads the zip64 locator just before the end record.
func findZipDir64End(r io.ReaderAt, endOff int64) (int64, bool) {
	loc := endOff - zipDir64LocLen
	if loc < 0 {
		return 0, false
	}
	var b [zipDir64LocLen]byte
	if _, err := r.ReadAt(b[:], loc); err != nil {
		return 0, false
	}
	if binary.LittleEndian.Uint32(b[0:]) != zipDir64LocSig ||
		binary.LittleEndian.Uint32(b[4:]) != 0 || binary.LittleEndian.Uint32(b[16:]) != 1 {
		return 0, false
	}
	p := int64(binary.LittleEndian.Uint64(b[8:]))
	return p, p >= 0
}
