# Sourced by scripts and tests: a throwaway docker-registry on a free loopback port.
#   start_registry DIR   writes DIR/registry.yml, starts the registry (log in DIR/registry.log),
#                        sets REGISTRY_HOST (127.0.0.1:PORT) and REGISTRY_PID
#   stop_registry        stops it (safe to call twice, or when it never started)

start_registry() {
  local dir=$1 port
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  REGISTRY_HOST=127.0.0.1:$port
  cat > "$dir/registry.yml" <<YML
version: 0.1
log:
  level: error
storage:
  filesystem:
    rootdirectory: $dir/registry-data
http:
  addr: $REGISTRY_HOST
YML
  docker-registry serve "$dir/registry.yml" > "$dir/registry.log" 2>&1 &
  REGISTRY_PID=$!
  for _ in $(seq 200); do
    curl -sf "http://$REGISTRY_HOST/v2/" >/dev/null && return 0
    sleep 0.05
  done
  echo "docker-registry did not start:" >&2
  cat "$dir/registry.log" >&2
  return 1
}

stop_registry() {
  if [ -n "${REGISTRY_PID:-}" ]; then
    kill "$REGISTRY_PID" 2>/dev/null || true
    wait "$REGISTRY_PID" 2>/dev/null || true
    REGISTRY_PID=""
  fi
}
