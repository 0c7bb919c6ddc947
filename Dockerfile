# Production image: builds the release binary, runs it as a non-root user.
FROM rust:1-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends clang libclang-dev make g++ python3-pip \
 && pip3 install --break-system-packages 'cmake>=3.28' \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p riskd

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends libstdc++6 ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /app --shell /usr/sbin/nologin riskd
WORKDIR /app
COPY --from=build /src/target/release/riskd /usr/local/bin/riskd
COPY riskd.toml ./
COPY features ./features
COPY rules ./rules
COPY models ./models
USER riskd
# Metrics and health endpoints, reachable by probes and Prometheus on the
# pod network; the admin endpoints (/status, /admin/reload) need the token.
EXPOSE 9464
ENV RISKD_HTTP_LISTEN=0.0.0.0:9464
# Mount the key file and the admin token (never bake them into the image) and point at them:
#   -v /secure/keys.toml:/run/secrets/riskd-keys.toml -e RISKD_PII_KEY_FILE=/run/secrets/riskd-keys.toml
#   -v /secure/admin-token:/run/secrets/riskd-admin-token -e RISKD_HTTP_ADMIN_TOKEN_FILE=/run/secrets/riskd-admin-token
ENTRYPOINT ["riskd"]
CMD ["serve"]
