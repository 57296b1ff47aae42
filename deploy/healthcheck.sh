#!/bin/bash
# Health check for the container image, which has no curl: GET http://127.0.0.1:PORT/PATH
# over bash's /dev/tcp; exit 0 only on a 200 answer within 5 s.
#   triage-healthcheck [PORT] [PATH]     (defaults: 9464 /healthz; the retrainer: 9465)
port=${1:-9464}
path=${2:-/healthz}
exec 3<>"/dev/tcp/127.0.0.1/$port" || exit 1
printf 'GET %s HTTP/1.0\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n' "$path" >&3
IFS= read -r -t 5 status <&3 || exit 1
[[ $status == "HTTP/1."?" 200"* ]]
