#!/bin/sh
echo "before install as $(id -un) in $(pwd)"
