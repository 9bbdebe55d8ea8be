# syntax=docker/dockerfile:1
# Dockerfile — fieldbridge in a container (docs/deployment.md, "Docker").
#
# Two stages on the same pinned Debian 12 base: the build stage makes the
# Debian package (debian/, the same one `apt install` gets on bare metal); the
# runtime stage installs that package with apt, so it gets exactly the shared
# libraries the package's Depends name and nothing of the toolchain.  It runs
# as the unprivileged user fieldbridge (uid 10001: mounted keys and the buffer
# volume can be given to it), the buffer in the volume /var/lib/fieldbridge.
#
#   docker build -t fieldbridge:0.1.0 .
#   docker run --rm -v fb-buffer:/var/lib/fieldbridge \
#       -v $PWD/my.yaml:/etc/fieldbridge/fieldbridge.yaml:ro fieldbridge:0.1.0
#
# The base is pinned to a Debian point release (12.11); pin it by digest as
# well (debian:12.11-slim@sha256:...) where a registry mirror is used.
ARG BASE=debian:12.11-slim

FROM ${BASE} AS build
# the Build-Depends of debian/control (and build-essential, which dpkg-buildpackage implies)
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
        build-essential debhelper cmake ninja-build pkgconf \
        libmodbus-dev libmosquitto-dev libyaml-dev libjansson-dev libmicrohttpd-dev libssl-dev \
        libsystemd-dev protobuf-c-compiler libprotobuf-c-dev liblua5.4-dev \
        libcurl4-openssl-dev zlib1g-dev libkissfft-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# nocheck (option and profile: no cmocka): the unit tests run in CI (scripts/test.sh),
# not in every image build
RUN DEB_BUILD_PROFILES=nocheck DEB_BUILD_OPTIONS="nocheck parallel=$(nproc)" dpkg-buildpackage -b -us -uc \
 && mkdir /out && mv ../fieldbridge_*.deb /out/fieldbridge.deb

FROM ${BASE}
# the user first, with a fixed uid; the package's postinst keeps an existing one
RUN groupadd --system --gid 10001 fieldbridge \
 && useradd --system --uid 10001 --gid fieldbridge --home-dir /var/lib/fieldbridge \
        --no-create-home --shell /usr/sbin/nologin fieldbridge
COPY --from=build /out/fieldbridge.deb /tmp/fieldbridge.deb
# curl: the health check; ca-certificates: mqtts:// to brokers with public CAs
RUN apt-get update \
 && apt-get install -y --no-install-recommends /tmp/fieldbridge.deb curl ca-certificates \
 && apt-get clean && rm -rf /var/lib/apt/lists/* /tmp/fieldbridge.deb \
 && install -d -o fieldbridge -g fieldbridge -m 0750 /var/lib/fieldbridge
USER fieldbridge
WORKDIR /var/lib/fieldbridge
VOLUME ["/var/lib/fieldbridge"]
# the metrics endpoint of the packaged config (metrics: {listen: ...:9100})
EXPOSE 9100
# Healthy = the metrics endpoint answers AND no connection or sink thread is
# stalled (fieldbridge_stalled_threads, the same test as the systemd watchdog).
# Needs a metrics: section on port 9100 in the config the container runs.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD curl -fsS --max-time 4 http://127.0.0.1:9100/metrics | grep -qx 'fieldbridge_stalled_threads 0' || exit 1
# SIGTERM (docker stop): offline status published, buffer flushed, exit 0
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/bin/fieldbridge"]
CMD ["run", "-c", "/etc/fieldbridge/fieldbridge.yaml"]
