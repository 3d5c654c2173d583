#!/usr/bin/env bash
# The container images, checked without a Docker engine.
#
# Reads Dockerfile.gateway and Dockerfile.sidecar, and:
#   1. recipe: runs the dependency-layer recipe step of each Dockerfile on a copy of the
#      build context and checks that the stub workspace resolves with --locked and that
#      every target root cargo expects is present (the cached dependency layer builds);
#   2. layout: copies exactly what the runtime stage COPYs (release binaries for
#      `COPY --from=build /out/X`, repository files otherwise) into a clean temporary
#      root, fails when a source is missing;
#   3. run: starts the gateway from that root the way the image does — the ENTRYPOINT's
#      command line, the Dockerfile's ENV and nothing else of this shell's environment,
#      as an unprivileged user (nobody), working directory = WORKDIR — on the
#      development config with a local mock backend, then runs the image's own
#      HEALTHCHECK command and one MCP tool call through it.
#
#   ops/scripts/check-image-layout.sh            # needs target/release binaries (built if missing)
#   ops/scripts/check-image-layout.sh --build    # cargo build --release first, always
#   CHECK_IMAGE_BIN_DIR=target/debug ops/scripts/check-image-layout.sh   # other binaries
#
# Exit status 0 when every check passes. Takes a few seconds with built binaries.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$root"

build=0
for a in "$@"; do
  case "$a" in
    --build) build=1 ;;
    -h|--help) sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown argument: $a (see --help)" >&2; exit 2 ;;
  esac
done

log() { printf '[check-image-layout] %s\n' "$*" >&2; }
fail() { printf '[check-image-layout] FAIL: %s\n' "$*" >&2; exit 1; }

# CHECK_IMAGE_BIN_DIR: take the binaries from elsewhere (e.g. a debug build); nothing
# is built then.
rel="${CHECK_IMAGE_BIN_DIR:-$root/target/release}"
if [ -z "${CHECK_IMAGE_BIN_DIR:-}" ] && { [ $build = 1 ] || [ ! -x "$rel/mcp-gateway" ] || [ ! -x "$rel/mcp-mock" ]; }; then
  log "building release binaries (cargo build --release -p mcp-gateway -p mcp-backends)"
  cargo build --release -q -p mcp-gateway -p mcp-backends
fi
[ -x "$rel/mcp-gateway" ] && [ -x "$rel/mcp-mock" ] || fail "no mcp-gateway and mcp-mock in $rel"
newer=$(find gateway/src crates gateway/Cargo.toml Cargo.lock -newer "$rel/mcp-gateway" -print -quit 2>/dev/null || true)
[ -z "$newer" ] || log "warning: $newer is newer than $rel/mcp-gateway (run with --build to check a fresh binary)"

tmp=$(mktemp -d /tmp/mcpgw-image.XXXXXX)
. "$root/ops/scripts/lib.sh"
proc_init "$tmp"
cleanup() {
  proc_stop_all
  rm -rf "$tmp"
}
trap cleanup EXIT INT TERM
chmod 755 "$tmp"

# The build context as Docker sees it (the .dockerignore'd heavy parts left out).
mkdir -p "$tmp/context"
tar -C "$root" --exclude=./target --exclude=./.tools --exclude=./.git --exclude=./.run \
    --exclude='*/node_modules' --exclude='*/__pycache__' -cf - . | tar -C "$tmp/context" -xf -

# --- Dockerfile reader -------------------------------------------------------------------
cat > "$tmp/dockerfile.py" <<'PY'
"""Minimal Dockerfile reader for this repository's two Dockerfiles.

python3 dockerfile.py DOCKERFILE CONTEXT OUT
Writes into OUT: recipe.sh (the RUN of stage `recipe`), copies.tsv (runtime COPYs: from-stage or "-", source, destination),
env (NUL-separated KEY=VALUE of the runtime stage), workdir, user, entrypoint and
healthcheck (NUL-separated argv).
"""
import json, os, shlex, sys

dockerfile, context, out = sys.argv[1:4]
lines, buf = [], ""
for raw in open(dockerfile, encoding="utf-8"):
    s = raw.rstrip("\n")
    if not buf and (s.lstrip().startswith("#") or not s.strip()):
        continue
    if s.lstrip().startswith("#"):
        continue  # comment inside a continued instruction
    if s.endswith("\\"):
        buf += s[:-1] + " "
        continue
    lines.append(buf + s)
    buf = ""

stages, cur = {}, None
for ln in lines:
    word, _, rest = ln.strip().partition(" ")
    word = word.upper()
    if word == "FROM":
        parts = rest.split()
        name = parts[2] if len(parts) >= 3 and parts[1].lower() == "as" else str(len(stages))
        cur = stages.setdefault(name, [])
        stages["__last__"] = cur
        continue
    if cur is not None:
        cur.append((word, rest.strip()))

runtime = stages["__last__"]
recipe = [r for w, r in stages.get("recipe", []) if w == "RUN"]
open(os.path.join(out, "recipe.sh"), "w").write(recipe[0] if recipe else "")

env, workdir, user, entry, health = {}, "/", "root", [], []
copies = []
for word, rest in runtime:
    if word == "ENV":
        for tok in shlex.split(rest):
            k, _, v = tok.partition("=")
            env[k] = v
    elif word == "WORKDIR":
        workdir = os.path.join(workdir, rest)
    elif word == "USER":
        user = rest
    elif word == "ENTRYPOINT":
        entry = json.loads(rest)
    elif word == "HEALTHCHECK":
        cmd = rest[rest.index("CMD") + 3:].strip()
        health = json.loads(cmd)
    elif word == "COPY":
        toks = shlex.split(rest)
        flags = [t for t in toks if t.startswith("--")]
        paths = [t for t in toks if not t.startswith("--")]
        src, dest = paths[:-1], paths[-1]
        frm = next((f.split("=", 1)[1] for f in flags if f.startswith("--from=")), "-")
        if not dest.startswith("/"):
            dest = os.path.join(workdir, dest) + ("/" if dest.endswith("/") else "")
        for s in src:
            copies.append((frm, s, dest))
with open(os.path.join(out, "copies.tsv"), "w") as f:
    for c in copies:
        f.write("\t".join(c) + "\n")
with open(os.path.join(out, "env"), "w") as f:
    f.write("\0".join(f"{k}={v}" for k, v in env.items()))
open(os.path.join(out, "workdir"), "w").write(workdir)
open(os.path.join(out, "user"), "w").write(user)
open(os.path.join(out, "entrypoint"), "w").write("\0".join(entry))
open(os.path.join(out, "healthcheck"), "w").write("\0".join(health))
PY

# --- 1. recipe ------------------------------------------------------------------------------
check_recipe() {  # $1 = Dockerfile, $2 = work dir
  local df="$1" w="$2"
  mkdir -p "$w"
  python3 "$tmp/dockerfile.py" "$df" "$tmp/context" "$w"
  [ -s "$w/recipe.sh" ] || fail "$df: no RUN in a stage named recipe"
  rm -rf "$tmp/in" "$w/recipe"
  cp -a "$tmp/context" "$tmp/in"
  local script
  script=$(sed -e "s#/recipe#$w/recipe#g" -e "s#cd /in#cd $tmp/in#" "$w/recipe.sh")
  sh -c "$script" || fail "$df: the recipe step failed"  # RUN uses /bin/sh
  # The stub workspace must resolve exactly as the lockfile says...
  (cd "$w/recipe" && cargo metadata --locked --format-version 1 > "$w/metadata.json") \
    || fail "$df: the recipe's workspace does not resolve with --locked"
  # ...and every target root of every workspace member must exist in it.
  python3 - "$w/metadata.json" "$w/recipe" <<'PY' || fail "$df: the recipe lacks target roots"
import json, os, sys
meta = json.load(open(sys.argv[1]))
members = set(meta["workspace_members"])
missing = [t["src_path"] for p in meta["packages"] if p["id"] in members
           for t in p["targets"] if not os.path.exists(t["src_path"])
           and not set(t["kind"]) & {"test", "bench", "example"}]
if missing:
    print("missing: " + ", ".join(missing), file=sys.stderr)
    sys.exit(1)
PY
  cmp -s "$w/recipe/Cargo.lock" "$root/Cargo.lock" || fail "$df: the recipe changed Cargo.lock"
  log "recipe ok: $df (stub workspace resolves --locked, all target roots present)"
}

# --- 2. layout --------------------------------------------------------------------------------
make_layout() {  # $1 = Dockerfile, $2 = work dir; fills $2/root
  local df="$1" w="$2" frm src dest from_path n=0
  mkdir -p "$w/root"
  while IFS=$'\t' read -r frm src dest; do
    if [ "$frm" != - ]; then
      # Build-stage outputs: /out/NAME is target/release/NAME (see the build stage).
      case "$src" in /out/*) from_path="$rel/${src#/out/}" ;; *) fail "$df: COPY --from=$frm $src: unknown source" ;; esac
    else
      from_path="$root/$src"
    fi
    [ -e "$from_path" ] || fail "$df: COPY source missing: $src ($from_path)"
    if [[ "$dest" == */ ]]; then
      mkdir -p "$w/root$dest"; cp -RL --preserve=mode,timestamps "$from_path" "$w/root$dest"
    else
      mkdir -p "$(dirname "$w/root$dest")"; cp -RL --preserve=mode,timestamps "$from_path" "$w/root$dest"
    fi
    n=$((n + 1))
  done < "$w/copies.tsv"
  [ $n -gt 0 ] || fail "$df: the runtime stage copies nothing"
  chmod -R a+rX "$w/root"
  log "layout ok: $df ($n files: $(cd "$w/root" && find . -type f | sort | tr '\n' ' '))"
}


for df in Dockerfile.gateway Dockerfile.sidecar; do
  [ -f "$df" ] || fail "$df is missing"
done
check_recipe Dockerfile.gateway "$tmp/gw"
check_recipe Dockerfile.sidecar "$tmp/sc"
make_layout Dockerfile.gateway "$tmp/gw"

# The sidecar's layout needs its release binary (not built by this script): with it,
# the image's ENTRYPOINT validates the development config (--check); without it, the
# files it copies from the repository must exist.
if [ -x "$rel/mcp-oauth-sidecar" ]; then
  make_layout Dockerfile.sidecar "$tmp/sc"
  sc_layout="$tmp/sc/root"
  mapfile -d '' sc_env < "$tmp/sc/env"
  mapfile -d '' sc_entry < "$tmp/sc/entrypoint"
  sc_argv=()
  for a in "${sc_entry[@]}"; do
    a="${a//\/usr\/local\/bin\//$sc_layout/usr/local/bin/}"
    a="${a//\/app\//$sc_layout/app/}"
    sc_argv+=("$a")
  done
  if [ "${sc_argv[0]}" = /usr/bin/tini ] && [ ! -x /usr/bin/tini ]; then sc_argv=("${sc_argv[@]:2}"); fi
  sc_user=()
  if [ "$(id -u)" = 0 ] && command -v setpriv >/dev/null; then
    sc_user=(setpriv --reuid=65534 --regid=65534 --clear-groups)
  fi
  out=$(cd "$sc_layout$(cat "$tmp/sc/workdir")" && env -i PATH=/usr/bin:/bin HOME="$tmp" "${sc_env[@]}" \
        "${sc_user[@]}" "${sc_argv[@]}" --check 2>&1) \
    || fail "Dockerfile.sidecar: the entrypoint's config check failed: $out"
  log "sidecar started from the layout with --check: $out"
  # MCP_OAUTH_SIDECAR_CONFIG (compose.yaml's mounted file) replaces the baked one.
  rc=0
  out=$(cd "$sc_layout$(cat "$tmp/sc/workdir")" && env -i PATH=/usr/bin:/bin HOME="$tmp" "${sc_env[@]}" \
        MCP_OAUTH_SIDECAR_CONFIG="$tmp/not-mounted.toml" "${sc_user[@]}" "${sc_argv[@]}" --check 2>&1) || rc=$?
  if [ $rc = 0 ] || ! grep -q "not-mounted.toml" <<<"$out"; then
    fail "Dockerfile.sidecar: the entrypoint does not read MCP_OAUTH_SIDECAR_CONFIG (rc $rc): $out"
  fi
  log "the sidecar entrypoint reads MCP_OAUTH_SIDECAR_CONFIG"
else
  while IFS=$'\t' read -r frm src dest; do
    [ "$frm" != - ] || [ -e "$root/$src" ] || fail "Dockerfile.sidecar: COPY source missing: $src"
  done < "$tmp/sc/copies.tsv"
  log "sidecar layout: repository files present; target/release/mcp-oauth-sidecar not built, not started"
fi

# --- 3. run the gateway from the layout --------------------------------------------------------
[ "$(cat "$tmp/gw/user")" != root ] || fail "Dockerfile.gateway: the runtime stage runs as root"
mock_url=$(proc_start mock TERM 5 "$rel/mcp-mock" --http 127.0.0.1:0 --name demo) \
  || fail "mcp-mock did not start: $(cat "$tmp/mock.err")"

port=$(free_port)
layout="$tmp/gw/root"
# The container's environment: the Dockerfile's ENV, PATH, HOME of the image user, and
# the two development variables pointed at this run's port and mock.
mapfile -d '' image_env < "$tmp/gw/env"
# HOME is the image user's writable volume (/var/lib/mcp-gateway in the image).
home="$tmp/home"
mkdir -p "$home"
[ "$(id -u)" = 0 ] && chown 65534:65534 "$home"
run_env=(PATH="$layout/usr/local/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
         HOME="$home" "${image_env[@]}"
         MCP_LISTEN="127.0.0.1:$port" HEALTH_PORT="$port" MCP_DEV_BACKEND_URL="$mock_url")
# The ENTRYPOINT with image paths mapped into the layout; tini only if installed here.
mapfile -d '' entry < "$tmp/gw/entrypoint"
argv=()
for a in "${entry[@]}"; do
  a="${a//\/usr\/local\/bin\//$layout/usr/local/bin/}"
  a="${a//\/app\//$layout/app/}"
  argv+=("$a")
done
if [ "${argv[0]}" = /usr/bin/tini ] && [ ! -x /usr/bin/tini ]; then argv=("${argv[@]:2}"); fi
workdir="$layout$(cat "$tmp/gw/workdir")"
[ -d "$workdir" ] || fail "WORKDIR $(cat "$tmp/gw/workdir") does not exist in the layout"

as_user=()
if [ "$(id -u)" = 0 ] && command -v setpriv >/dev/null; then
  as_user=(setpriv --reuid=65534 --regid=65534 --clear-groups)
fi
(cd "$workdir" && exec env -i "${run_env[@]}" "${as_user[@]}" "${argv[@]}") \
  > "$tmp/gw.out" 2> "$tmp/gw.err" &
gw_pid=$!
proc_track "$gw_pid"

mapfile -d '' health < "$tmp/gw/healthcheck"
[ ${#health[@]} -gt 0 ] || fail "Dockerfile.gateway has no HEALTHCHECK CMD"
healthy=0
for _ in $(seq 200); do
  if ! kill -0 "$gw_pid" 2>/dev/null; then
    fail "the gateway exited: $(tail -5 "$tmp/gw.err")"
  fi
  if env -i "${run_env[@]}" "${health[@]}" 2>/dev/null; then healthy=1; break; fi
  sleep 0.05
done
[ $healthy = 1 ] || fail "HEALTHCHECK did not pass within 10 s: $(tail -5 "$tmp/gw.err")"
# The start line comes once the gateway's own probe of its listener succeeds, which can
# be just after the HEALTHCHECK's first success: waited for, with a deadline (5 s).
announced=0
for _ in $(seq 100); do
  if grep -q "^listening on http://127.0.0.1:$port/mcp" "$tmp/gw.out"; then announced=1; break; fi
  sleep 0.05
done
[ $announced = 1 ] || fail "unexpected start line: $(cat "$tmp/gw.out")"
who=$(id -un); [ ${#as_user[@]} -eq 0 ] || who=nobody
log "gateway started from the layout as $who, CONFIG_ENV=$(tr '\0' '\n' < "$tmp/gw/env" | sed -n 's/^CONFIG_ENV=//p'); HEALTHCHECK passes"

# One MCP round trip through the layout's gateway to the mock.
url="http://127.0.0.1:$port/mcp"
H=(-H 'content-type: application/json' -H 'accept: application/json, text/event-stream')
curl -sS -D "$tmp/init.h" -o "$tmp/init.b" "$url" "${H[@]}" \
  -d '{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"check-image-layout","version":"1"}}}'
sid=$(sed -n 's/^[Mm]cp-[Ss]ession-[Ii]d: *//p' "$tmp/init.h" | tr -d '\r')
[ -n "$sid" ] || fail "initialize gave no session: $(cat "$tmp/init.h" "$tmp/init.b")"
S=(-H "mcp-session-id: $sid" -H 'mcp-protocol-version: 2025-11-25')
curl -sS -o /dev/null "$url" "${H[@]}" "${S[@]}" -d '{"jsonrpc":"2.0","method":"notifications/initialized"}'
reply=$(curl -sS "$url" "${H[@]}" "${S[@]}" \
  -d '{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"demo__echo","arguments":{"text":"from the image layout"}}}')
case "$reply" in
  *'from the image layout'*) ;;
  *) fail "tools/call through the layout's gateway: $reply" ;;
esac
log "tools/call demo__echo through the layout's gateway: ok"

# As `docker stop` / ECS do: SIGTERM, then the drain (docs/operations.md) and Pingora's
# graceful shutdown; within the task's stopTimeout (45 s, ops/terraform/ecs.tf).
kill -TERM "$gw_pid"
for _ in $(seq 900); do kill -0 "$gw_pid" 2>/dev/null || break; sleep 0.05; done
kill -0 "$gw_pid" 2>/dev/null && fail "the gateway did not stop within 45 s of SIGTERM (the ECS stopTimeout)"
# A mounted configuration named by MCP_GATEWAY_CONFIG (compose.yaml's way) replaces the
# baked one: the entrypoint validates (-t) the file it names, and fails on a missing one.
for cfg_case in ok missing; do
  if [ $cfg_case = ok ]; then cfg="$root/ops/config/local.toml"; else cfg="$tmp/not-mounted.toml"; fi
  rc=0
  out=$(cd "$workdir" && env -i "${run_env[@]}" MCP_GATEWAY_CONFIG="$cfg" "${argv[@]}" -t 2>&1) || rc=$?
  if [ $cfg_case = ok ] && [ $rc != 0 ]; then
    fail "Dockerfile.gateway: MCP_GATEWAY_CONFIG=$cfg is refused: $out"
  fi
  if [ $cfg_case = missing ] && { [ $rc = 0 ] || ! grep -q "not-mounted.toml" <<<"$out"; }; then
    fail "Dockerfile.gateway: the entrypoint does not read MCP_GATEWAY_CONFIG (rc $rc): $out"
  fi
done
log "the gateway entrypoint reads MCP_GATEWAY_CONFIG"
echo "check-image-layout: 1 passed, 0 failed"
