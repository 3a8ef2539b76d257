#!/usr/bin/env bash
# Installs what building and testing edgebox needs beyond the Rust toolchain, or says
# exactly what is missing. Safe to run repeatedly: it only acts on what is absent.
set -euo pipefail

need_apt=()
command -v cmake >/dev/null 2>&1 || need_apt+=(cmake)        # pingora's C dependencies
command -v cc >/dev/null 2>&1 || need_apt+=(gcc)
command -v python3 >/dev/null 2>&1 || need_apt+=(python3 python3-pip)  # sandbox runtimes come from PyPI via pip

# `--test`: what the test suite needs too (the dashboard's end-to-end test drives
# Debian's headless Chromium; the control plane's etcd store is tested against a real
# etcd, Debian's etcd-server, which the tests start on loopback ports of their own;
# the multi-host test builds network namespaces with iproute2).
if [ "${1:-}" = "--test" ]; then
  command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || need_apt+=(chromium)
  command -v etcd >/dev/null 2>&1 || need_apt+=(etcd-server)
  command -v ip >/dev/null 2>&1 || need_apt+=(iproute2)
fi

if [ "${#need_apt[@]}" -gt 0 ]; then
  echo "edgebox: installing missing build tools: ${need_apt[*]}" >&2
  if [ "$(id -u)" -eq 0 ]; then SUDO=""; elif command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else SUDO="none"; fi
  if [ "$SUDO" = "none" ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "edgebox: cannot install automatically; please install: ${need_apt[*]}" >&2
    exit 1
  fi
  $SUDO apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null 2>&1 \
    || { $SUDO apt-get update -qq >/dev/null 2>&1 && $SUDO apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null; } \
    || { echo "edgebox: apt-get could not install ${need_apt[*]}; please install them" >&2; exit 1; }
fi

if ! python3 -m pip --version >/dev/null 2>&1; then
  echo "edgebox: python3 has no pip; the sandbox fetches its language runtimes with pip (apt-get install python3-pip)" >&2
fi
