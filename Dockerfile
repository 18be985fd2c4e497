# aiosfu server image. Mirrors the README: a venv with the package, then `sfu serve`.
# (Not built in CI: there is no Docker engine on our machines. Keep it this simple.)
FROM python:3.11-slim-bookworm

# av and aiortc ship manylinux wheels; gcc builds our C extensions (and the odd sdist)
RUN apt-get update \
    && apt-get install -y --no-install-recommends gcc libc6-dev \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /app
COPY pyproject.toml setup.py README.md ./
COPY sfu ./sfu
COPY signaling ./signaling
COPY sfu_client ./sfu_client
COPY loadtest ./loadtest
RUN python -m venv /venv && /venv/bin/pip install --no-cache-dir .

# HTTP + WebSocket signaling. Media uses one UDP port per participant (ephemeral range):
# run with --network host, or publish the range and set SFU_ICE_HOST to the host's address.
# With SFU_UDP_PORT=P, worker k takes port P+k: publish one port per worker.
# Media workers: one per CPU the container may use (--cpuset-cpus); a --cpus quota is not seen,
# so set SFU_WORKERS to match it (SFU_WORKERS=1: the rooms in the server's own process).
# Access keys: mount a keys file and set SFU_KEYS_FILE (docs/operations.md); without them the
# server refuses to serve 0.0.0.0 unless SFU_INSECURE=1.
EXPOSE 8080
ENV SFU_HOST=0.0.0.0 SFU_PORT=8080 SFU_LOG_FORMAT=json
USER nobody
ENTRYPOINT ["/venv/bin/sfu"]
CMD ["serve"]
