#!/bin/sh
# Prints the package version and release of the checked-out commit, from
# `git describe`, in a form rpm and dpkg both order correctly:
#   on tag v1.2.3                      1.2.3 1
#   4 commits after v1.2.3             1.2.3 1.4.gabcdef0
#   tag v1.3.0-rc1 (a pre-release)     1.3.0~rc1 1
#   no v* tag yet (137 commits)        0.0.0 137.gabcdef0
# and ".dirty" on the release of a tree with uncommitted changes.
set -eu
cd "$(dirname "$0")/.."
sha=$(git rev-parse --short=7 HEAD)
dirty=""
if [ -n "$(git status --porcelain --untracked-files=no 2>/dev/null)" ]; then
	dirty=".dirty"
fi
if tag=$(git describe --tags --match 'v[0-9]*' --abbrev=0 2>/dev/null); then
	version=$(echo "${tag#v}" | tr '-' '~')
	n=$(git rev-list --count "$tag..HEAD")
	if [ "$n" -eq 0 ]; then
		release="1"
	else
		release="1.$n.g$sha"
	fi
else
	version="0.0.0"
	release="$(git rev-list --count HEAD).g$sha"
fi
echo "$version $release$dirty"
