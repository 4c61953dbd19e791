# A container image with airgap-bundle, helm v4 and kubectl (kustomize built in).
# Build: docker build -t airgap-bundle .   Run: docker run --rm -v "$PWD:/work" -w /work airgap-bundle sweep bundle.yaml
FROM python:3.11-slim
WORKDIR /opt/airgap-bundle
COPY pyproject.toml README.md ./
COPY bundler ./bundler
COPY scripts ./scripts
RUN pip install --no-cache-dir . && python scripts/fetch_tools.py /usr/local/bin
ENTRYPOINT ["airgap-bundle"]
