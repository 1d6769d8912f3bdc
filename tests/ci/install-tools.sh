#!/usr/bin/env bash
# Installs what the few tests that go beyond Rust need: promtool and a
# Prometheus server, etcd, Chromium and its WebDriver (the console's browser
# tests), and a Python venv (.venv) with the official Key Protect SDK,
# selenium and the Kubernetes manifest validator. failway's build needs
# none of them. Debian or Ubuntu, as root (apt-get); idempotent.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."

need=()
command -v promtool >/dev/null 2>&1 || need+=(prometheus)
command -v prometheus >/dev/null 2>&1 || need+=(prometheus)
command -v etcd >/dev/null 2>&1 || need+=(etcd-server)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v chromedriver >/dev/null 2>&1 || need+=(chromium-driver)
command -v python3 >/dev/null 2>&1 || need+=(python3)
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || need+=(python3-venv)
if [ ${#need[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # Debian's packages start system services; failway's tests start their
  # own on free loopback ports and never use those.
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
# Stop any system etcd/prometheus the packages may have started (by unit,
# never by process name); tests do not depend on them either way.
if command -v systemctl >/dev/null 2>&1; then
  systemctl stop etcd prometheus >/dev/null 2>&1 || true
fi

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/pip install -q --disable-pip-version-check \
  -r tests/python/requirements.txt -r tests/deploy/requirements.txt
echo "install-tools: promtool, prometheus, etcd, chromium, chromedriver and .venv are ready"
