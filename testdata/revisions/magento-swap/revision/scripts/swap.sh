#!/bin/sh
set -e
d={{dest}}/magento
if [ -d "$d" ] && [ ! -L "$d" ]; then
	rm -rf "$d.real"
	mv "$d" "$d.real"
	ln -s magento.real "$d"
fi
echo "magento is now $(readlink "$d")"
