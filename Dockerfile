# raftlog container image.
#
#   docker build -t raftlog .                    # compile from source in a Rust image
#   podman build --build-arg BINARY=host \
#       --build-arg RUNTIME_BASE=localhost/debian-base:bookworm -t raftlog .
#                                                # take the binary from the host build
#   Podman 4.3 / buildah 1.28 (Debian 12) prune the stage that a default ARG picks;
#   with them spell the choice out: `podman build --build-arg BINARY=source .`
#   (docker build and docker-compose.yaml, which always passes BINARY, are fine).
#
# Build arguments:
#   RUST_IMAGE    image of the builder stage (default rust:1-bookworm).
#   RUNTIME_BASE  image of the runtime stage (default debian:bookworm-slim; any
#                 Debian-like image with /bin/sh works, e.g. a debootstrapped one).
#   BINARY        "source" (default): cargo builds the binary in the builder stage.
#                 "host": copy an already built binary from the build context instead;
#                 the builder stage is then skipped, so no Rust image is needed.
#   HOST_BINARY   path of that binary inside the build context (default: the static
#                 build `RUSTFLAGS='-C target-feature=+crt-static' cargo build --release
#                 --target x86_64-unknown-linux-gnu`). A binary linked against glibc
#                 needs one no newer than the runtime image's (bookworm: 2.36).
#
# The runtime stage runs as the non-root user raftlog (uid 10001), keeps its state in
# the /data volume, listens for HTTP on 8080 and gRPC on 7070, and is `healthy` once
# GET /ready answers 200 (running with a known leader). The binary is PID 1 (exec-form
# ENTRYPOINT) and handles SIGTERM itself: a leader hands leadership over, then exits
# 0 within about two seconds.

ARG RUST_IMAGE=rust:1-bookworm
ARG RUNTIME_BASE=debian:bookworm-slim
ARG BINARY=source

# ---- builder: compile from source -------------------------------------------------
FROM ${RUST_IMAGE} AS builder
WORKDIR /src
# protoc comes from the protoc-bin-vendored crate: nothing to install.
COPY Cargo.toml Cargo.lock build.rs ./
COPY proto ./proto
COPY src ./src
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --bin raftlog \
 && install -D -m 0755 target/release/raftlog /out/raftlog \
 && strip /out/raftlog

# ---- the two ways to get the binary; BINARY picks one ----------------------------
FROM scratch AS binary-source
COPY --from=builder /out/raftlog /raftlog

FROM scratch AS binary-host
ARG HOST_BINARY=target/x86_64-unknown-linux-gnu/release/raftlog
COPY ${HOST_BINARY} /raftlog

# hadolint ignore=DL3006
FROM binary-${BINARY} AS binary

# ---- runtime -----------------------------------------------------------------------
# hadolint ignore=DL3006
FROM ${RUNTIME_BASE} AS runtime
SHELL ["/bin/sh", "-eu", "-c"]

# curl serves the HEALTHCHECK, the Kubernetes probes' preStop hook and the helper
# scripts. A base image that already has it (a debootstrapped one built with
# --include=curl) needs no network here. Versions come from the base's Debian release.
# hadolint ignore=DL3008
RUN if ! command -v curl >/dev/null 2>&1; then \
      apt-get update; \
      apt-get install -y --no-install-recommends curl ca-certificates; \
      rm -rf /var/lib/apt/lists/*; \
    fi; \
    groupadd --gid 10001 raftlog; \
    useradd --uid 10001 --gid raftlog --home-dir /data --no-create-home \
      --shell /usr/sbin/nologin raftlog; \
    mkdir -p /data /etc/raftlog; \
    chown raftlog:raftlog /data; \
    chmod 0750 /data

COPY --from=binary /raftlog /usr/local/bin/raftlog
COPY deploy/container.toml /etc/raftlog/raftlog.toml
COPY deploy/bin/ /usr/local/bin/

LABEL org.opencontainers.image.title="raftlog" \
      org.opencontainers.image.description="A replicated, durable, totally ordered message log over Raft" \
      org.opencontainers.image.licenses="Apache-2.0"

USER 10001:10001
WORKDIR /data
VOLUME ["/data"]
# 8080: HTTP client API, /health, /ready, /metrics. 7070: gRPC between nodes.
EXPOSE 8080 7070
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=5s --timeout=3s --start-period=60s --retries=3 \
  CMD ["/usr/local/bin/raftlog-probe", "/ready"]
ENTRYPOINT ["/usr/local/bin/raftlog"]
CMD ["serve", "--config", "/etc/raftlog/raftlog.toml"]
