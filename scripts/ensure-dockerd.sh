#!/usr/bin/env bash
# Make a dockerd reachable for the docker-marked tests: install docker.io if it
# is missing and start the daemon without a network of its own (no bridge, no
# iptables), as this machine needs. Does nothing when a daemon already answers.
set -euo pipefail
if docker info >/dev/null 2>&1; then exit 0; fi
if [ "$(id -u)" != 0 ]; then
  echo "ensure-dockerd: no reachable dockerd and not root; start one yourself (dockerd --bridge=none --iptables=false)" >&2
  exit 0
fi
if ! command -v dockerd >/dev/null; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io >/dev/null
fi
nohup dockerd --bridge=none --iptables=false >/tmp/itercode-dockerd.log 2>&1 &
for _ in $(seq 60); do docker info >/dev/null 2>&1 && exit 0; sleep 0.5; done
echo "ensure-dockerd: dockerd did not come up; see /tmp/itercode-dockerd.log" >&2
exit 1
