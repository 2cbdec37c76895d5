#!/usr/bin/env bash
# fuzz-keep.sh PACKAGE FUZZFUNC [SINCE]
#
# Copies the inputs `go test -fuzz` found interesting for one fuzz target
# from the Go build cache into the package's testdata/fuzz/FUZZFUNC, so the
# corpus grows in the repository instead of in one machine's cache (which
# `go clean -fuzzcache` and cache trimming throw away). Plain `go test` then
# runs them as seeds, in `make test` too.
#
# Crashers need no copying: go test writes them to testdata/fuzz itself.
# Only inputs not already kept (by content) and at most FUZZ_KEEP_MAX_BYTES
# long are copied, newest first, at most FUZZ_KEEP per run, so one long
# session does not bury the repository under thousands of files. With SINCE
# (a file; `make fuzz` touches one before each target) only inputs the cache
# gained after it are considered: what this run found, not what earlier runs
# on this machine left in the cache.
set -euo pipefail

if [ $# -lt 2 ] || [ $# -gt 3 ]; then
	echo "usage: $0 PACKAGE FUZZFUNC [SINCE]" >&2
	exit 2
fi
pkg=$1
fn=$2
since=${3:-}
keep=${FUZZ_KEEP:-20}
max_bytes=${FUZZ_KEEP_MAX_BYTES:-32768}
go=${GO:-go}

import=$($go list "$pkg")
dir=$($go list -f '{{.Dir}}' "$pkg")
cache="$($go env GOCACHE)/fuzz/$import/$fn"
dest="$dir/testdata/fuzz/$fn"

if [ ! -d "$cache" ]; then
	echo "fuzz-keep: $fn: nothing in $cache"
	exit 0
fi
mkdir -p "$dest"

declare -A have=()
for f in "$dest"/*; do
	[ -f "$f" ] && have[$(sha256sum <"$f" | cut -d' ' -f1)]=1
done

n=0
while IFS= read -r src; do
	[ "$n" -ge "$keep" ] && break
	[ -z "$since" ] || [ "$src" -nt "$since" ] || continue
	[ "$(stat -c %s "$src")" -le "$max_bytes" ] || continue
	sum=$(sha256sum <"$src" | cut -d' ' -f1)
	[ -z "${have[$sum]:-}" ] || continue
	cp "$src" "$dest/$(basename "$src")"
	have[$sum]=1
	n=$((n + 1))
done < <(find "$cache" -maxdepth 1 -type f -printf '%T@ %p\n' | sort -rn | cut -d' ' -f2-)
echo "fuzz-keep: $fn: kept $n new input(s) in ${dest#"$PWD"/}"
