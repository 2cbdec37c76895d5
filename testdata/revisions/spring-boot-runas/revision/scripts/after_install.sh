#!/bin/sh
set -e
id -un > {{dest}}/run/installed-by
