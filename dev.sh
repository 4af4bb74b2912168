#!/usr/bin/env bash
# moat's one entry point for people and CI (see README):
#   ./dev.sh run [moat args]   install what is missing, build, run build/moat
#   ./dev.sh test [--sanitize] install what is missing, build, run every test suite
#   ./dev.sh test --threads    the e2e suite against a ThreadSanitizer build, two workers
#   ./dev.sh fuzz [SECONDS]    build the libFuzzer targets (clang) and run each SECONDS (default 30)
#   ./dev.sh bench [NAME]      build and run the benchmarks in bench/
#   ./dev.sh package           build the Debian package (debian/) into dist/
# Idempotent: packages are installed only when missing, builds are incremental.
set -euo pipefail
cd "$(dirname "$0")"

BUILD_PKGS=(meson ninja-build pkg-config gcc libc6-dev libuv1-dev libc-ares-dev libldns-dev
            libgnutls28-dev libyaml-dev libcriterion-dev zlib1g-dev libpsl-dev
            publicsuffix) # zlib, libpsl: moat learn (gzip logs, the Public Suffix List)
TEST_PKGS=(python3 bind9-dnsutils knot-dnsutils gnutls-bin curl nginx-light dnsmasq-base
           nftables iproute2 valgrind openssl slirp4netns groff-base man-db python3-yaml
           liburing-dev  # liburing: bench/tcp/uringsni only (built, so CI compiles it)
           git fcgiwrap openssh-server openssh-client netcat-openbsd) # explicit proxies' e2e clients and servers
FUZZ_PKGS=(clang lld libclang-rt-14-dev)
PACKAGE_PKGS=(build-essential debhelper dpkg-dev python3)

need_pkgs() { tools/need-pkgs "$@"; }

setup() { # setup DIR [meson options...]
  local dir=$1; shift
  # ninja re-runs meson by itself when a meson.build changed.
  [ -f "$dir/build.ninja" ] || meson setup "$dir" "$@" >&2
}

build() { # build DIR [meson options...]
  setup "$@"
  ninja -C "$1" >&2
}

cmd=${1:-run}
[ $# -gt 0 ] && shift
case "$cmd" in
run)
  need_pkgs "${BUILD_PKGS[@]}"
  build build
  exec build/moat "$@"
  ;;
test)
  need_pkgs "${BUILD_PKGS[@]}" "${TEST_PKGS[@]}"
  if [ "${1:-}" = "--sanitize" ]; then
    shift
    build build-san -Dsanitize=true
    # Leak checks on; a UBSan report fails the test (built with no recovery).
    # san-check.sh fails a test whose output holds a sanitizer report.
    ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
      meson test -C build-san --print-errorlogs --num-processes 2 \
      --wrapper "$PWD/tests/san-check.sh" "$@"
  elif [ "${1:-}" = "--threads" ]; then
    shift
    # The daemon's threads (workers, log writer, thread pool) under TSan,
    # with two workers unless MOAT_TEST_WORKERS says otherwise. The e2e
    # suite only: Criterion's runner does not start under TSan.
    # Only the daemon is built: the e2e tests run nothing else of the tree.
    setup build-tsan -Db_sanitize=thread --buildtype=debugoptimized
    ninja -C build-tsan moat >&2
    MOAT_TEST_WORKERS=${MOAT_TEST_WORKERS:-2} \
      meson test -C build-tsan --no-rebuild --suite e2e --print-errorlogs --num-processes 2 \
      --wrapper "$PWD/tests/tsan-check.sh" "$@"
  else
    build build
    meson test -C build --print-errorlogs --num-processes 2 "$@"
  fi
  ;;
fuzz)
  need_pkgs "${BUILD_PKGS[@]}" "${FUZZ_PKGS[@]}"
  secs=${1:-30}
  CC=clang build build-fuzz -Dfuzz=true
  exec tests/fuzz/run.sh build-fuzz "$secs"
  ;;
bench)
  need_pkgs "${BUILD_PKGS[@]}" liburing-dev
  build build-bench --buildtype=release
  name=${1:-filter}
  case "$name" in
  filter) build-bench/bench/filter/bench_filter && exec build-bench/bench/filter/bench_tenant ;;
  soak) shift && exec bench/soak/run.sh build-bench "$@" ;; # [--minutes N] [--conns N]
  *) exec "bench/$name/run.sh" build-bench ;;
  esac
  ;;
package)
  need_pkgs "${BUILD_PKGS[@]}" "${PACKAGE_PKGS[@]}"
  # dpkg-buildpackage writes next to the source tree; the results move to
  # dist/. Two jobs, no tests (./dev.sh test runs them).
  ver=$(dpkg-parsechangelog -S Version)
  rm -f ../moat_"$ver"_* ../moat-dbgsym_"$ver"_*
  DEB_BUILD_OPTIONS="nocheck parallel=2" dpkg-buildpackage -b -us -uc -j2 >&2
  debian/rules clean >&2
  mkdir -p dist
  mv ../moat_"$ver"_* ../moat-dbgsym_"$ver"_* dist/ 2>/dev/null || mv ../moat_"$ver"_* dist/
  ls dist/moat_"$ver"_*.deb
  ;;
*)
  echo "usage: ./dev.sh run [moat args] | test [--sanitize|--threads] | fuzz [SECONDS] | bench [NAME] | package" >&2
  exit 1
  ;;
esac
