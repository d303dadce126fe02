# Manul's node agent image: the CO-RE BPF objects built here by clang, the
# pinned Python tree (requirements.lock) in a venv, Debian 12 as on the nodes
# the tests run on. Built from the repository root:
#   docker build -t ghcr.io/manul-dev/manul:0.1.0 .
# (No container builder exists on the development machines: this file is
# checked by reading, see docs/deployment.md.)

FROM debian:12-slim AS build
RUN apt-get update -qq \
 && apt-get install -y -qq --no-install-recommends clang llvm libbpf-dev make \
        python3 python3-venv ca-certificates \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Makefile pyproject.toml requirements.lock ./
COPY bpf/ bpf/
# BPF objects only (bpf/include/vmlinux.h is committed: CO-RE, no kernel headers)
RUN make $(for f in bpf/*.bpf.c; do n=$(basename "$f" .bpf.c); echo "build/bpf/$n.bpf.o"; done)
COPY agent/ agent/
COPY compiler/ compiler/
COPY README.md ./
# the runtime dependencies only, at the versions requirements.lock pins (no test
# tools); the current OpenTelemetry protos last (xds-protos bundles an old copy)
RUN python3 -m venv /opt/manul/venv \
 && /opt/manul/venv/bin/pip install -q --no-cache-dir -c requirements.lock . \
 && otel=$(grep -i '^opentelemetry-proto==' requirements.lock) \
 && /opt/manul/venv/bin/pip install -q --no-cache-dir --no-deps --force-reinstall "$otel" \
 && mkdir -p /opt/manul/bpf && cp build/bpf/*.bpf.o /opt/manul/bpf/

FROM debian:12-slim
RUN apt-get update -qq \
 && apt-get install -y -qq --no-install-recommends libbpf1 python3 iproute2 ca-certificates \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /opt/manul /opt/manul
ENV PATH=/opt/manul/venv/bin:$PATH \
    MANUL_BPF_DIR=/opt/manul/bpf \
    PYTHONUNBUFFERED=1
ENTRYPOINT ["manul"]
CMD ["run", "--kubernetes"]
