#!/usr/bin/env bash
# Replaces one echoserver release by another without refusing, resetting or cutting a
# connection (see echoserver@.service): starts the new instance, waits until it listens, then
# stops the old one, which drains its connections before it exits.
#   sudo deploy/upgrade.sh <old version> <new version>
set -euo pipefail
old=${1:?usage: upgrade.sh <old version> <new version>}
new=${2:?usage: upgrade.sh <old version> <new version>}
since=$(date '+%Y-%m-%d %H:%M:%S')
systemctl start "echoserver@$new"
# Ready once it logs that it listens (and takes new connections from the old one).
for _ in $(seq 1 300); do
  if journalctl -q -u "echoserver@$new" --since "$since" -g 'listening on' >/dev/null 2>&1; then
    systemctl stop "echoserver@$old"
    systemctl disable -q "echoserver@$old" 2>/dev/null || true
    systemctl enable -q "echoserver@$new"
    echo "echoserver $new serves; $old drained and stopped"
    exit 0
  fi
  if ! systemctl is-active -q "echoserver@$new"; then
    echo "echoserver $new did not start; $old still serves:" >&2
    journalctl -q -u "echoserver@$new" --since "$since" -n 5 >&2 || true
    exit 1
  fi
  sleep 0.1
done
echo "echoserver $new did not listen within 30 s; stopping it, $old still serves" >&2
systemctl stop "echoserver@$new"
exit 1
