package yamlx

import (
	"fmt"
	"io"
	"os"
	"syscall"
)

// ReadFile reads a YAML file for Parse, stopping one byte past
// MaxFileSize: a larger file is refused by Parse without the rest of it
// ever being read, so a 400 MB appspec costs 1 MiB of memory, and a
// config named /dev/zero ends too. O_NONBLOCK keeps a FIFO without a
// writer from blocking the open forever (it then reads as empty).
func ReadFile(path string) ([]byte, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, MaxFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	return b, nil
}
