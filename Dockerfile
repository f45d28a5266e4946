# wick on CPU: a multi-stage build, from the Rust image to a slim Debian runtime. The quantized
# matmul kernels pick AVX-512 VNNI / AVX-512 / AVX2 / scalar at run time, so one image serves
# every x86-64 machine (no target-cpu flags here; do not add any). For GPUs: Dockerfile.cuda.
#
#   docker build -t wick:cpu .
#
# Configuration is WICK_* variables and `wick serve` flags only (see README.md and
# docs/DEPLOY.md); the image sets the listener to 0.0.0.0:8080 and the two volumes.

ARG RUST_VERSION=1.95.0
ARG DEBIAN_RELEASE=trixie

FROM rust:${RUST_VERSION}-slim-${DEBIAN_RELEASE} AS builder
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY benches ./benches
# The cargo registry and target directory are BuildKit caches: a rebuild after a source change
# recompiles wick only. The binary is copied out of the cache mount, stripped by the profile.
ENV CARGO_PROFILE_RELEASE_STRIP=symbols CARGO_PROFILE_RELEASE_DEBUG=false
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin wick \
    && install -m 0755 target/release/wick /usr/local/bin/wick

FROM debian:${DEBIAN_RELEASE}-slim AS runtime
# DL3008 (pin apt versions): the base image tag pins the distribution release; its point
# updates are security fixes we want, and pinned versions vanish from the archive. curl is for
# the HEALTHCHECK, ca-certificates for downloads from the hub.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 wick \
    && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/wick --no-create-home \
       --shell /usr/sbin/nologin wick \
    && mkdir -p /var/lib/wick /var/cache/huggingface \
    && chown 10001:10001 /var/lib/wick /var/cache/huggingface
COPY --from=builder /usr/local/bin/wick /usr/local/bin/wick
ENV WICK_HOST=0.0.0.0 \
    WICK_PORT=8080 \
    WICK_DEVICE=cpu \
    WICK_DATA_DIR=/var/lib/wick \
    HF_HOME=/var/cache/huggingface
VOLUME ["/var/cache/huggingface", "/var/lib/wick"]
WORKDIR /var/lib/wick
USER 10001:10001
EXPOSE 8080
# Loading a large model takes minutes: unhealthy only after the start period.
HEALTHCHECK --interval=30s --timeout=5s --start-period=600s --retries=3 \
    CMD ["/bin/sh", "-c", "curl -fsS \"http://127.0.0.1:${WICK_PORT}/health/ready\" || exit 1"]
ENTRYPOINT ["/usr/local/bin/wick"]
CMD ["serve"]
