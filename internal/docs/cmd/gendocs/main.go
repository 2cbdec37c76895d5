// Command gendocs writes the generated documentation (`make docs`), or
// with -check lists what is out of date and exits 1.
package main

import (
	"flag"
	"fmt"
	"os"

	"github.com/rollback-agent/rollback-agent/internal/docs"
)

func main() {
	check := flag.Bool("check", false, "only list the generated files that are out of date")
	flag.Parse()
	if err := run(*check); err != nil {
		fmt.Fprintln(os.Stderr, "gendocs:", err)
		os.Exit(1)
	}
}

func run(check bool) error {
	root, err := docs.RepoRoot(".")
	if err != nil {
		return err
	}
	if !check {
		return docs.Write(root)
	}
	drift, err := docs.Drift(root)
	if err != nil {
		return err
	}
	if len(drift) > 0 {
		return fmt.Errorf("out of date (run 'make docs'): %v", drift)
	}
	return nil
}
