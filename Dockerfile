# nielsgpt image: builds the one binary with cgo, and ggml's CPU backend as
# modules for several x86-64 levels with CMake; runs as a non-root user on a
# slim Debian. At start `serve` loads the module that suits the host's CPU
# best (BACKEND_DIR; the log line "model loaded" names it), so the one image
# runs at full speed on AVX2 and AVX-512 machines alike. By default it serves
# the model embedded in the binary, so it needs no network and no volume.
#
#   docker build -t nielsgpt .
#   docker run --rm -p 8000:8000 nielsgpt
#   docker run --rm -p 8000:8000 -v $PWD/checkpoints:/data -e MODEL=/data/best.pt nielsgpt

FROM golang:1.26-bookworm AS build
RUN apt-get update \
    && apt-get install -y --no-install-recommends cmake \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
# The CPU variants (docs/ARCHITECTURE.md §7): target ggml builds libggml-base
# and every libggml-cpu-*.so; the C tests and libnielsgpt are not needed here.
# Only the modules and the libggml-base they link go into the image, symlinks
# resolved (the modules ask for libggml-base.so.0).
RUN cmake -S . -B build/release -DCMAKE_BUILD_TYPE=Release -DBUILD_TESTING=OFF \
    && cmake --build build/release --target ggml --parallel "$(nproc)" \
    && mkdir -p /out/backends \
    && cp -L build/release/backends/libggml-base.so.0 build/release/backends/libggml-cpu*.so /out/backends/
# The binary's own CPU backend is only the fallback for a CPU no module suits,
# so it gets the compiler's portable default instead of -march=native.
RUN make build NATIVE=

FROM debian:bookworm-slim
RUN useradd --system --uid 10001 --home-dir /home/nielsgpt --create-home nielsgpt
COPY --from=build /src/bin/nielsgpt /usr/local/bin/nielsgpt
COPY --from=build /out/backends/ /usr/local/lib/nielsgpt/backends/
USER nielsgpt
WORKDIR /home/nielsgpt
# The same variables as outside Docker (README: Configuration).
ENV API_HOST=0.0.0.0 \
    API_PORT=8000 \
    MODEL=demo \
    BACKEND_DIR=/usr/local/lib/nielsgpt/backends \
    CKPT_DIR=/home/nielsgpt/checkpoints
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=3s --start-period=30s --retries=3 \
    CMD ["/usr/local/bin/nielsgpt", "healthcheck"]
ENTRYPOINT ["/usr/local/bin/nielsgpt"]
CMD ["serve"]
