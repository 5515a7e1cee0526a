# One image with every worker binary and the operator CLI. Pick the worker with the command:
#   docker run --env-file worldland.env worldland registration-handler
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked \
      -p redis-bridge -p registration-handler -p join-token-issuer -p heartbeat-recorder \
      -p staleness-sweeper -p csr-approver -p allocator -p worldland-cli

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* && useradd --system --uid 10001 worldland
COPY --from=build /src/target/release/redis-bridge /src/target/release/registration-handler \
     /src/target/release/join-token-issuer /src/target/release/heartbeat-recorder \
     /src/target/release/staleness-sweeper /src/target/release/csr-approver /src/target/release/allocator \
     /src/target/release/worldland /usr/local/bin/
USER 10001
ENTRYPOINT []
CMD ["worldland", "--help"]
