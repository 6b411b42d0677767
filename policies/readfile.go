package policies

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
)

// Size caps of what loading a policy reads. The policy cap is well above the largest policy
// the project measures (bench/scale.go: a million consumers, 130 MB); Options.MaxFileSize and
// `portcullis run -max-policy-size` raise it.
const (
	DefaultMaxFileSize int64 = 512 << 20
	// MaxSecretFileSize caps a ${file:PATH} secret: a key, a password or a PEM key is small.
	MaxSecretFileSize int64 = 1 << 20
)

var (
	// errNotRegular is a path that is not a regular file: a FIFO would block the load until a
	// writer came, and a device or socket could stream without end.
	errNotRegular = errors.New("not a regular file")
	// errTooLarge is a file above its size cap.
	errTooLarge = errors.New("file too large")
)

// readRegular reads the regular file at path (symlinks followed), at most limit bytes. It
// refuses anything else before opening it for reading, and opens without blocking so that a
// FIFO swapped in after the check cannot block either. Errors are *fs.PathError values
// wrapping errNotRegular or errTooLarge, or the system's.
func readRegular(path string, limit int64) ([]byte, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if err := checkRegular(path, fi, limit); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(path, os.O_RDONLY|openNonBlock, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	// The file the descriptor names, which may not be the one stat saw.
	if fi, err = f.Stat(); err != nil {
		return nil, err
	}
	if err := checkRegular(path, fi, limit); err != nil {
		return nil, err
	}
	// Sized up front, as os.ReadFile does: a large policy is read into one allocation, not
	// grown by doubling (which would double the start-up peak of a million consumers).
	data, err := readAllSized(io.LimitReader(f, limit+1), fi.Size())
	if err != nil {
		return nil, err
	}
	if int64(len(data)) > limit {
		// It grew while being read.
		return nil, &fs.PathError{Op: "read", Path: path, Err: fmt.Errorf("%w: more than %s, the limit", errTooLarge, byteSize(limit))}
	}
	return data, nil
}

// readAllSized reads r to its end into a buffer sized for size bytes, growing it only if r
// holds more.
func readAllSized(r io.Reader, size int64) ([]byte, error) {
	data := make([]byte, 0, size+512)
	for {
		if len(data) == cap(data) {
			data = append(data, 0)[:len(data)]
		}
		n, err := r.Read(data[len(data):cap(data)])
		data = data[:len(data)+n]
		if err == io.EOF {
			return data, nil
		}
		if err != nil {
			return nil, err
		}
	}
}

func checkRegular(path string, fi fs.FileInfo, limit int64) error {
	if !fi.Mode().IsRegular() {
		return &fs.PathError{Op: "read", Path: path, Err: fmt.Errorf("%w: it is %s", errNotRegular, fileKind(fi.Mode()))}
	}
	if fi.Size() > limit {
		return &fs.PathError{Op: "read", Path: path, Err: fmt.Errorf("%w: %s, the limit is %s", errTooLarge, byteSize(fi.Size()), byteSize(limit))}
	}
	return nil
}

func fileKind(m fs.FileMode) string {
	switch {
	case m&fs.ModeNamedPipe != 0:
		return "a named pipe (FIFO)"
	case m&fs.ModeSocket != 0:
		return "a socket"
	case m&fs.ModeDevice != 0, m&fs.ModeCharDevice != 0:
		return "a device"
	case m.IsDir():
		return "a folder"
	}
	return "of type " + m.Type().String()
}

// byteSize words a size for a message: whole MiB or KiB when exact, else bytes.
func byteSize(n int64) string {
	switch {
	case n >= 1<<20 && n%(1<<20) == 0:
		return fmt.Sprintf("%d MiB", n>>20)
	case n >= 1<<10 && n%(1<<10) == 0:
		return fmt.Sprintf("%d KiB", n>>10)
	}
	return fmt.Sprintf("%d bytes", n)
}
