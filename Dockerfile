# livegate in a container: the release binary and the example app file, run as
# an unprivileged user. See docs/operations.md ("Docker").
#
#   docker build -t livegate .
#   docker run --rm -p 4000:4000 -v livegate-data:/data livegate

FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin livegate

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --user-group --home-dir /data --no-create-home livegate \
    && mkdir -p /data /app \
    && chown livegate:livegate /data
COPY --from=build /src/target/release/livegate /usr/local/bin/livegate
COPY schema/app.toml /app/app.toml

ENV LIVEGATE_LISTEN=0.0.0.0:4000 \
    LIVEGATE_APP=/app/app.toml \
    DATABASE_URL=sqlite:///data/livegate.db \
    LIVEGATE_DATA_DIR=/data \
    NO_COLOR=1
USER livegate
WORKDIR /data
VOLUME /data
EXPOSE 4000

# Ready when /readyz answers 200. The image has no curl: bash's /dev/tcp asks.
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/4000 && printf 'GET /readyz HTTP/1.0\\r\\nHost: localhost\\r\\n\\r\\n' >&3 && head -n 1 <&3 | grep -q ' 200 '"]

ENTRYPOINT ["livegate"]
CMD ["serve"]
