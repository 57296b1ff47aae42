#!/usr/bin/env bash
# Installs Alertmanager (Debian's prometheus-alertmanager, with amtool) if it is missing.
# Run it as a plain process with deploy/alertmanager/alertmanager.yml when you want one.
exec bash "$(dirname "$0")/install-debian.sh" prometheus-alertmanager:prometheus-alertmanager,amtool
