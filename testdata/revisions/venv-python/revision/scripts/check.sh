#!/bin/sh
set -e
# Through the installed links: python -> python3 -> /usr/bin/python3.
PYTHONPATH={{dest}}/venv/lib64/python3/site-packages {{dest}}/venv/bin/python -c 'import greeting; print(greeting.GREETING)'
