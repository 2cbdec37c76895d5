#!/bin/sh
kill -0 "$(cat {{dest}}/run/server.pid)" && test "$(cat {{dest}}/run/installed-by)" = "$(id -un)"
