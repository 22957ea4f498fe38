# nielsgpt image: builds the one binary with cgo (ggml compiled in), then runs
# it as a non-root user on a slim Debian. By default it serves the model
# embedded in the binary, so it needs no network and no volume.
#
#   docker build -t nielsgpt .
#   docker run --rm -p 8000:8000 nielsgpt
#   docker run --rm -p 8000:8000 -v $PWD/checkpoints:/data -e MODEL=/data/best.pt nielsgpt

FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
# A portable SIMD baseline instead of -march=native: the image runs on hosts
# other than the one that built it (x86-64-v3 = AVX2 + FMA; arm64 keeps its
# default, which has NEON).
RUN if [ "$(uname -m)" = "x86_64" ]; then native="-march=x86-64-v3"; else native=""; fi; \
    make build NATIVE="$native"

FROM debian:bookworm-slim
RUN useradd --system --uid 10001 --home-dir /home/nielsgpt --create-home nielsgpt
COPY --from=build /src/bin/nielsgpt /usr/local/bin/nielsgpt
USER nielsgpt
WORKDIR /home/nielsgpt
# The same variables as outside Docker (README: Configuration).
ENV API_HOST=0.0.0.0 \
    API_PORT=8000 \
    MODEL=demo \
    CKPT_DIR=/home/nielsgpt/checkpoints
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=3s --start-period=30s --retries=3 \
    CMD ["/usr/local/bin/nielsgpt", "healthcheck"]
ENTRYPOINT ["/usr/local/bin/nielsgpt"]
CMD ["serve"]
