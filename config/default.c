/* config/default.c: the embedded default config (SPEC §3 without `allow`).
 *
 * Plain `moat` runs with this: filtering off, listening on loopback only.
 * It is also the source of every default: the loader walks this text before
 * the operator's file (config.c), so what `moat --help` prints is what runs.
 */
#include "config/config.h"

const char cfg_default_yaml[] =
    "mode: enforce                       # or audit\n"
    "dns:\n"
    "  listen: [\"127.0.0.1:5353\", \"[::1]:5353\"]\n"
    "  upstream: []                      # empty: /etc/resolv.conf\n"
    "  timeout: 2s\n"
    "  cache_size: 10000\n"
    "sinkhole: {mode: null, ipv4: 0.0.0.0, ipv6: \"::\", ttl: 10s}\n"
    "proxy:\n"
    "  transparent: []\n"
    "  tls: [\"127.0.0.1:8443\"]\n"
    "  http: [\"127.0.0.1:8080\"]\n"
    "  connect: []                       # HTTP proxy (CONNECT), e.g. 127.0.0.1:3128\n"
    "  socks: []                         # SOCKS5, e.g. 127.0.0.1:1080\n"
    "  tls_ports: [443]\n"
    "  http_ports: [80]\n"
    "  max_hello: 16384\n"
    "  max_http_head: 8192\n"
    "  peek_timeout: 5s\n"
    "  connect_timeout: 5s\n"
    "  idle_timeout: 5m\n"
    "  max_connections: 10000\n"
    "# allow:                            # absent: filtering off; present (even []): on\n"
    "#   - api.openai.com\n"
    "#   - \"*.githubusercontent.com\"\n"
    "#   - {host: github.com, ports: [22, 443]}\n"
    "#   - 203.0.113.0/24\n"
    "log: {format: text, level: info}    # format json: one JSON object per line\n"
    "metrics: {listen: \"\"}               # e.g. 127.0.0.1:9090, Prometheus text format\n"
    "reload: {watch: false}              # true: reload when its files change\n"
    "shutdown_grace: 10s\n"
    "workers: auto                       # event loops: one per CPU moat may use; 1: one loop\n";
