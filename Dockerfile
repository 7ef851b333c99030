# novapay, CPU image. Multi-stage: build with the Rust toolchain, run on a slim Debian as a non-root
# user. Models and the knowledge base are volumes, so the image holds no weights:
#   docker build -t novapay .
#   docker run -p 8080:8080 -v $PWD/models:/models -v $PWD/data:/data \
#       -e NOVAPAY_MODELS_DIR=/models/hub -e HF_HUB_OFFLINE=1 -e NOVAPAY_API_KEYS=change-me novapay
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked && cp target/release/novapay /novapay

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home /var/lib/novapay --create-home novapay \
    && chmod 700 /var/lib/novapay \
    && mkdir -p /models /data /index && chown novapay:novapay /models /data /index
COPY --from=build /novapay /usr/local/bin/novapay
USER novapay
WORKDIR /var/lib/novapay
ENV NOVAPAY_MODELS_DIR=/models/hub \
    NOVAPAY_DATA_DIR=/data \
    NOVAPAY_STATE_DIR=/var/lib/novapay \
    NOVAPAY_HOST=0.0.0.0 \
    NOVAPAY_PORT=8080
# Listening on 0.0.0.0, `serve` refuses to start without NOVAPAY_API_KEYS (pass them with -e or an env
# file); NOVAPAY_ALLOW_ANONYMOUS=1 serves without keys on purpose (an authenticating proxy in front).
VOLUME ["/models", "/data", "/var/lib/novapay"]
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=5s --start-period=120s --retries=3 \
    CMD curl -fsS http://127.0.0.1:8080/health || exit 1
ENTRYPOINT ["novapay"]
CMD ["serve"]
