package testbed

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/rollback-agent/rollback-agent/internal/mountinfo"
	"github.com/rollback-agent/rollback-agent/internal/testutil"
)

// This file is the machinery of the EBS data plane: sparse image files,
// loop devices, by-id links and mounts. dataplane_ops.go says when the
// proxy uses it.

// stateDirPrefix names the bed's directory of images; the pid in it lets a
// later bed recognize the leftovers of a test binary that died without
// cleaning up (see sweepStale).
const stateDirPrefix = "testbed-ebs-"

// makeImage creates a sparse image of mib MiB at path, with an empty ext4
// filesystem when format is set (a fresh EBS volume is blank; the
// instance's own volumes come with a filesystem, as an AMI's would).
func makeImage(path string, mib int64, format bool) error {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return fmt.Errorf("create image: %w", err)
	}
	if err := f.Truncate(mib << 20); err != nil {
		f.Close()
		return fmt.Errorf("size image %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("close image %s: %w", path, err)
	}
	if format {
		if out, err := exec.Command("mkfs.ext4", "-q", "-F", path).CombinedOutput(); err != nil {
			return fmt.Errorf("mkfs.ext4 %s: %w: %s", path, err, out)
		}
	}
	return nil
}

// copySparse copies src to dst without writing the holes of src nor the
// zero blocks of its data: a 64 MiB image with a fresh filesystem stays a
// few MiB on disk, and copies take milliseconds.
func copySparse(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return fmt.Errorf("open %s: %w", src, err)
	}
	defer in.Close()
	fi, err := in.Stat()
	if err != nil {
		return fmt.Errorf("stat %s: %w", src, err)
	}
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return fmt.Errorf("create %s: %w", dst, err)
	}
	if err := copyData(in, out, fi.Size()); err != nil {
		out.Close()
		os.Remove(dst)
		return fmt.Errorf("copy %s to %s: %w", src, dst, err)
	}
	if err := out.Close(); err != nil {
		os.Remove(dst)
		return fmt.Errorf("close %s: %w", dst, err)
	}
	return nil
}

func copyData(in, out *os.File, size int64) error {
	if err := out.Truncate(size); err != nil {
		return err
	}
	buf := make([]byte, 1<<20)
	zero := make([]byte, len(buf))
	fd := int(in.Fd())
	for off := int64(0); off < size; {
		data, err := unix.Seek(fd, off, unix.SEEK_DATA)
		if errors.Is(err, unix.ENXIO) {
			return nil // only a hole is left
		}
		if err != nil {
			return fmt.Errorf("SEEK_DATA at %d: %w", off, err)
		}
		hole, err := unix.Seek(fd, data, unix.SEEK_HOLE)
		if err != nil {
			return fmt.Errorf("SEEK_HOLE at %d: %w", data, err)
		}
		for p := data; p < hole; {
			n := int(min(int64(len(buf)), hole-p))
			k, err := in.ReadAt(buf[:n], p)
			if k > 0 && !bytes.Equal(buf[:k], zero[:k]) {
				if _, werr := out.WriteAt(buf[:k], p); werr != nil {
					return werr
				}
			}
			p += int64(k)
			if errors.Is(err, io.EOF) {
				return nil
			}
			if err != nil {
				return err
			}
		}
		off = hole
	}
	return nil
}

// losetup attaches image to a free loop device and returns the device.
func losetup(image string) (string, error) {
	out, err := exec.Command("losetup", "--find", "--show", image).CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("losetup --find --show %s: %w: %s", image, err, bytes.TrimSpace(out))
	}
	return strings.TrimSpace(string(out)), nil
}

// loopDetach frees a loop device. On a device still open elsewhere the
// kernel only marks it to be freed on last close, which is what a test
// bed tearing down wants.
func loopDetach(dev string) error {
	if out, err := exec.Command("losetup", "-d", dev).CombinedOutput(); err != nil {
		return fmt.Errorf("losetup -d %s: %w: %s", dev, err, bytes.TrimSpace(out))
	}
	return nil
}

// mountsOf lists where dev is mounted in this mount namespace, deepest
// first (the order to unmount them in).
func mountsOf(dev string) ([]string, error) {
	var st unix.Stat_t
	if err := unix.Stat(dev, &st); err != nil {
		return nil, fmt.Errorf("stat %s: %w", dev, err)
	}
	return mountsOfDev(unix.Major(uint64(st.Rdev)), unix.Minor(uint64(st.Rdev)))
}

func mountsOfDev(major, minor uint32) ([]string, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, fmt.Errorf("read mountinfo: %w", err)
	}
	defer f.Close()
	want := fmt.Sprintf("%d:%d", major, minor)
	var out []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		// id parent major:minor root mountpoint options ... (proc(5))
		fs := strings.Fields(sc.Text())
		if len(fs) >= 5 && fs[2] == want {
			out = append(out, mountinfo.Unescape(fs[4]))
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read mountinfo: %w", err)
	}
	sort.Slice(out, func(i, j int) bool { return len(out[i]) > len(out[j]) })
	return out, nil
}

// unmount unmounts dir, retrying briefly while it is busy (a process
// that just exited may still hold it) and detaching it lazily as a last
// resort so that teardown never leaves a mount behind.
func unmount(dir string) error {
	err := testutil.Poll(500*time.Millisecond, func() error {
		switch err := unix.Unmount(dir, 0); {
		case err == nil || errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOENT):
			return nil // EINVAL: not a mount point (anymore)
		case errors.Is(err, unix.EBUSY):
			return err
		default:
			return testutil.Stop(err)
		}
	})
	if err == nil {
		return nil
	}
	if lerr := unix.Unmount(dir, unix.MNT_DETACH); lerr == nil {
		return nil
	}
	return fmt.Errorf("umount %s: %w", dir, err)
}

// unmountAll unmounts every mount of dev.
func unmountAll(dev string) error {
	dirs, err := mountsOf(dev)
	if err != nil {
		return err
	}
	var errs []error
	for _, d := range dirs {
		if err := unmount(d); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// sweepStale frees what a test binary that died (a panic, a timeout
// kill) left behind: the loop devices and mounts of images in a bed
// directory whose process is gone, then the directory itself. Beds of
// live processes (tests running in parallel) are left alone.
func sweepStale(tmp string) {
	loops, _ := filepath.Glob("/sys/block/loop*/loop/backing_file")
	for _, bf := range loops {
		b, err := os.ReadFile(bf)
		if err != nil {
			continue
		}
		backing := strings.TrimSuffix(strings.TrimSpace(string(b)), " (deleted)")
		if !staleBedPath(tmp, backing) {
			continue
		}
		dev := "/dev/" + filepath.Base(filepath.Dir(filepath.Dir(bf)))
		_ = unmountAll(dev)
		_ = loopDetach(dev)
	}
	dirs, _ := filepath.Glob(filepath.Join(tmp, stateDirPrefix+"*"))
	for _, d := range dirs {
		if staleBedPath(tmp, filepath.Join(d, "x")) {
			os.RemoveAll(d)
		}
	}
}

// staleBedPath is true for a path inside a bed directory whose process no
// longer exists.
func staleBedPath(tmp, path string) bool {
	rel, err := filepath.Rel(tmp, path)
	if err != nil || !strings.HasPrefix(rel, stateDirPrefix) {
		return false
	}
	first, _, _ := strings.Cut(rel, string(filepath.Separator))
	pidStr, _, _ := strings.Cut(strings.TrimPrefix(first, stateDirPrefix), "-")
	pid, err := strconv.Atoi(pidStr)
	if err != nil || pid <= 0 || pid == os.Getpid() {
		return false
	}
	return errors.Is(syscall.Kill(pid, 0), syscall.ESRCH)
}
