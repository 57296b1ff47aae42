#!/usr/bin/env bash
# Installs Prometheus (with promtool) from Debian's packages if it is missing.
exec bash "$(dirname "$0")/install-debian.sh" prometheus:prometheus,promtool
