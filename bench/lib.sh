# bench/lib.sh: what the bench run.sh scripts share (sourced, bash).

# bench_stop_pids PID...: SIGTERM each, wait up to 3 s for each to exit, then
# SIGKILL what is left, then reap every child of the shell (for an EXIT trap:
# waits for all background jobs). Bounded: a benchmark never hangs at exit.
bench_stop_pids() {
  local p
  for p in "$@"; do kill "$p" 2>/dev/null || true; done
  for p in "$@"; do
    for _ in $(seq 30); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$p" 2>/dev/null || true
  done
  wait 2>/dev/null || true
}

# bench_wait_port ADDR PORT: return 0 once a TCP connect to ADDR:PORT
# succeeds, 1 after 5 s.
bench_wait_port() {
  for _ in $(seq 100); do
    if (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; then return 0; fi
    sleep 0.05
  done
  return 1
}
