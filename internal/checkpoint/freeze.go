package checkpoint

import (
	"fmt"
	"os"
	"sync"
	"time"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"
)

// The fsfreeze ioctls, _IOWR('X', 119/120, int) in linux/fs.h; x/sys/unix
// does not name them.
const (
	ioctlFIFREEZE = 0xC0045877
	ioctlFITHAW   = 0xC0045878
)

// maxFreeze is the longest a filesystem stays frozen, whatever happens to
// the API call: writers of the application block while it is frozen.
const maxFreeze = 60 * time.Second

// freeze freezes the mount points (FIFREEZE, as fsfreeze -f) and returns a
// thaw that is safe to call more than once. It also thaws by itself after
// maxFreeze, so a hung API call cannot leave the application's writes
// blocked. On error, whatever was frozen is thawed before returning.
func freeze(mounts []string, log *zap.Logger) (func(), error) {
	var frozen []*os.File
	var once sync.Once
	thaw := func() {
		once.Do(func() {
			for i := len(frozen) - 1; i >= 0; i-- {
				f := frozen[i]
				if err := unix.IoctlSetInt(int(f.Fd()), ioctlFITHAW, 0); err != nil && err != unix.EINVAL {
					log.Error("thaw failed: writes to this filesystem stay blocked; run fsfreeze -u", zap.String("mount", f.Name()), zap.Error(err))
				}
				f.Close()
			}
		})
	}
	for _, mnt := range mounts {
		f, err := os.Open(mnt)
		if err != nil {
			thaw()
			return func() {}, fmt.Errorf("freeze %s: %w", mnt, err)
		}
		if err := unix.IoctlSetInt(int(f.Fd()), ioctlFIFREEZE, 0); err != nil {
			f.Close()
			thaw()
			return func() {}, fmt.Errorf("freeze %s (FIFREEZE): %w", mnt, err)
		}
		frozen = append(frozen, f)
	}
	if len(frozen) > 0 {
		t := time.AfterFunc(maxFreeze, func() {
			log.Warn("thawing after the longest freeze allowed, before the snapshot call returned", zap.Duration("after", maxFreeze))
			thaw()
		})
		return func() { t.Stop(); thaw() }, nil
	}
	return thaw, nil
}
