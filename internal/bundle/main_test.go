package bundle

import (
	"flag"
	"os"
	"testing"
)

// minimizeTime replaces go test's 60s default for -fuzzminimizetime. Fuzz
// inputs here are whole archives (kilobytes), every execution touches the
// file system, and Go's byte minimizer is quadratic in the input length, so
// each new-coverage input would eat the full 60s: a 60s fuzz run would then
// explore a handful of inputs. An explicit -fuzzminimizetime still wins.
const minimizeTime = "300ms"

func TestMain(m *testing.M) {
	flag.Parse()
	explicit := false
	flag.Visit(func(f *flag.Flag) {
		if f.Name == "test.fuzzminimizetime" {
			explicit = true
		}
	})
	if !explicit {
		if err := flag.Set("test.fuzzminimizetime", minimizeTime); err != nil {
			panic(err)
		}
	}
	os.Exit(m.Run())
}
