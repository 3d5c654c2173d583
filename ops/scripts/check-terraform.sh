#!/usr/bin/env bash
# The Terraform of ops/terraform, checked offline (no AWS account, no provider download):
#   1. every .tf parses as HCL2 (PyPI python-hcl2): a syntax error fails, naming the file;
#   1b. the timeout ordering of rolling deploys (keep-alive, drain, deregistration,
#      stopTimeout) across the Terraform, ops/config/production.toml, ops/pingora.yaml;
#   2. `terraform fmt -check` when a terraform binary is installed (skipped otherwise);
#   3. checkov (PyPI) on ops/terraform: zero failed checks. A check that does not apply
#      is skipped inline, next to the resource, with its reason:
#        #checkov:skip=CKV_AWS_378:TLS ends at the ALB; …
#      and this script refuses a skip without a written reason.
#   4. checkov on Dockerfile.gateway and Dockerfile.sidecar, same rule.
#
#   ops/scripts/check-terraform.sh
#
# Tools are installed on first use, idempotently, into .tools/ (git-ignored):
#   .tools/venv      python-hcl2 (the project's Python venv, created if missing)
#   .tools/checkov   checkov, in a venv of its own: it depends on bc-python-hcl2, a fork
#                    that installs the same `hcl2` module as python-hcl2, and pins ~80
#                    packages that must not move under the interop tests' SDKs.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$root"
tf_dir="ops/terraform"
venv="$root/.tools/venv"
ckv_venv="$root/.tools/checkov"
HCL2_VERSION="${HCL2_VERSION:-8.1.4}"
CHECKOV_VERSION="${CHECKOV_VERSION:-3.3.30}"

log() { printf '[check-terraform] %s\n' "$*" >&2; }
fail() { printf '[check-terraform] FAIL: %s\n' "$*" >&2; exit 1; }

pip_quiet=(--quiet --disable-pip-version-check --no-input)

# --- tools ------------------------------------------------------------------------------
[ -x "$venv/bin/python" ] || { log "creating $venv"; python3 -m venv "$venv"; }
if ! "$venv/bin/python" -c "import hcl2, importlib.metadata as m; assert m.version('python-hcl2') == '$HCL2_VERSION'" 2>/dev/null; then
  log "installing python-hcl2==$HCL2_VERSION into $venv"
  "$venv/bin/pip" install "${pip_quiet[@]}" "python-hcl2==$HCL2_VERSION"
fi
[ -x "$ckv_venv/bin/python" ] || { log "creating $ckv_venv"; python3 -m venv "$ckv_venv"; }
if [ "$("$ckv_venv/bin/checkov" --version 2>/dev/null || true)" != "$CHECKOV_VERSION" ]; then
  log "installing checkov==$CHECKOV_VERSION into $ckv_venv (first time: a minute or two)"
  "$ckv_venv/bin/pip" install "${pip_quiet[@]}" "checkov==$CHECKOV_VERSION"
fi

# --- 1. HCL2 parse ------------------------------------------------------------------------
mapfile -t tf_files < <(find "$tf_dir" -name '*.tf' -not -path '*/.terraform/*' | sort)
[ ${#tf_files[@]} -gt 0 ] || fail "no .tf files under $tf_dir"
"$venv/bin/python" - "${tf_files[@]}" <<'PY' || fail "HCL2 parse"
import sys
import hcl2

bad = 0
blocks = 0
for path in sys.argv[1:]:
    try:
        with open(path, encoding="utf-8") as f:
            doc = hcl2.load(f)
        blocks += sum(len(v) if isinstance(v, list) else 1 for v in doc.values())
    except Exception as e:  # lark's errors carry line and column
        bad += 1
        print(f"{path}: {type(e).__name__}: {e}", file=sys.stderr)
if bad:
    sys.exit(1)
print(f"[check-terraform] HCL2 parse ok: {len(sys.argv) - 1} files, {blocks} top-level blocks", file=sys.stderr)
PY
# tfvars are HCL too.
mapfile -t tfvars < <(find "$tf_dir" -name '*.tfvars' | sort)
if [ ${#tfvars[@]} -gt 0 ]; then
  "$venv/bin/python" -c '
import sys, hcl2
for p in sys.argv[1:]:
    hcl2.load(open(p, encoding="utf-8"))
' "${tfvars[@]}" || fail "tfvars parse"
  log "tfvars parse ok: ${tfvars[*]}"
fi

# --- 1b. the scrape path --------------------------------------------------------------------
# The task's collector (monitoring.tf) scrapes the ports the production configurations
# listen on: the gateway's [metrics] listen and the sidecar's, on the task's loopback.
"$venv/bin/python" - <<'PY' || fail "scrape path"
import re, sys, tomllib
import hcl2

def locals_of(path):
    with open(path, encoding="utf-8") as f:
        doc = hcl2.load(f)
    out = {}
    for block in doc.get("locals", []):
        out.update(block)
    return out

main = locals_of("ops/terraform/main.tf")
mon = locals_of("ops/terraform/monitoring.tf")
gw = tomllib.load(open("ops/config/production.toml", "rb"))["metrics"]["listen"]
sc = tomllib.load(open("ops/config/sidecar.production.toml", "rb"))["metrics"]["listen"]
problems = []
if not gw.rstrip("}").endswith(f":{main['metrics_port']}"):
    problems.append(f"gateway metrics listen {gw!r} is not port {main['metrics_port']}")
if sc != f"127.0.0.1:{mon['sidecar_metrics_port']}":
    problems.append(f"sidecar metrics listen {sc!r} is not 127.0.0.1:{mon['sidecar_metrics_port']}")
text = open("ops/terraform/monitoring.tf", encoding="utf-8").read()
for port in ("metrics_port", "sidecar_metrics_port"):
    if f"127.0.0.1:${{local.{port}}}" not in text:
        problems.append(f"the collector does not scrape local.{port}")
if "local.observability_containers" not in open("ops/terraform/ecs.tf", encoding="utf-8").read():
    problems.append("the task definition does not include the collector container")
for p in problems:
    print(p, file=sys.stderr)
sys.exit(1 if problems else 0)
PY
log "scrape path ok: the collector scrapes the gateway and sidecar metrics ports"
# --- 1b. timeout ordering (rolling deploys lose no request; docs/operations.md) ----------
# gateway keepalive_timeout_s > ALB idle_timeout; deregistration_delay >= drain_s;
# grace_period_seconds (ops/pingora.yaml) > drain_s; gateway stopTimeout > both
# deregistration_delay and stop_delay_s + grace_period_seconds. The sidecar: its target
# group's deregistration_delay >= its drain_s; its stopTimeout > that delay and >
# stop_delay_s + drain_s; its keepalive_timeout_s > ALB idle_timeout. Values come from the Terraform (variable defaults, overridden
# by each tfvars), ops/config/production.toml, ops/config/sidecar.production.toml and
# ops/pingora.yaml.
"$venv/bin/python" - "$tf_dir" ops/config/production.toml ops/pingora.yaml \
  ops/config/sidecar.production.toml <<'PY' || fail "timeout ordering"
import glob, os, re, sys, tomllib
import hcl2

tf_dir, toml_path, yaml_path, sidecar_path = sys.argv[1:5]
docs = {}
for path in sorted(glob.glob(os.path.join(tf_dir, "*.tf"))):
    with open(path, encoding="utf-8") as f:
        docs[os.path.basename(path)] = hcl2.load(f)

def unq(v):
    """python-hcl2 8 keeps the quotes of labels and strings."""
    return v[1:-1] if isinstance(v, str) and len(v) >= 2 and v[0] == v[-1] == '"' else v

def get(block, key):
    for k, v in block.items():
        if unq(k) == key:
            return v
    return None

def resource(kind, name):
    for doc in docs.values():
        for r in doc.get("resource", []):
            found = get(get(r, kind) or {}, name)
            if found is not None:
                return found
    sys.exit(f"resource {kind}.{name} not found")

def variable_default(name):
    for doc in docs.values():
        for v in doc.get("variable", []):
            found = get(v, name)
            if found is not None:
                return unq(found.get("default"))
    sys.exit(f"variable {name} not found")

def number(value, what, tfvars):
    m = re.fullmatch(r"\$\{var\.(\w+)\}", str(value))
    if m:
        given = get(tfvars, m.group(1))
        return float(unq(given) if given is not None else variable_default(m.group(1)))
    try:
        return float(unq(value))
    except (TypeError, ValueError):
        sys.exit(f"{what}: {value!r} is not a number or a var reference")

def stop_timeout(container):
    for doc in docs.values():
        for loc in doc.get("locals", []):
            for c in loc.get("containers", []) or []:
                if unq(c.get("name")) == container:
                    return c.get("stopTimeout")
    sys.exit(f"the {container} container definition (locals.containers) not found")

with open(toml_path, "rb") as f:
    server = tomllib.load(f).get("server", {})
keepalive = float(server.get("keepalive_timeout_s", 75))
drain = float(server.get("drain_s", 10))
stop_delay = float(server.get("stop_delay_s", 0))
m = re.search(r"^grace_period_seconds:\s*(\d+)", open(yaml_path, encoding="utf-8").read(), re.M)
if not m:
    sys.exit(f"{yaml_path}: grace_period_seconds is not set")
grace = float(m.group(1))
with open(sidecar_path, "rb") as f:
    sc_server = tomllib.load(f).get("server", {})
sc_drain = float(sc_server.get("drain_s", 10))
sc_keepalive = float(sc_server.get("keepalive_timeout_s", 75))
sc_stop_delay = float(sc_server.get("stop_delay_s", 0))

failures = []
varsets = {"defaults": {}}
for path in sorted(glob.glob(os.path.join(tf_dir, "*.tfvars"))):
    with open(path, encoding="utf-8") as f:
        varsets[os.path.basename(path)] = hcl2.load(f)
for label, tfvars in varsets.items():
    idle = number(resource("aws_lb", "main").get("idle_timeout"), "aws_lb.main.idle_timeout", tfvars)
    dereg = number(resource("aws_lb_target_group", "gateway").get("deregistration_delay"),
                   "aws_lb_target_group.gateway.deregistration_delay", tfvars)
    stop = number(stop_timeout("gateway"), "gateway stopTimeout", tfvars)
    sc_dereg = number(resource("aws_lb_target_group", "sidecar").get("deregistration_delay"),
                      "aws_lb_target_group.sidecar.deregistration_delay", tfvars)
    sc_stop = number(stop_timeout("sidecar"), "sidecar stopTimeout", tfvars)
    checks = [
        (keepalive > idle, f"keepalive_timeout_s {keepalive:g} > ALB idle_timeout {idle:g}"),
        (dereg >= drain, f"deregistration_delay {dereg:g} >= drain_s {drain:g}"),
        (grace > drain, f"grace_period_seconds {grace:g} > drain_s {drain:g}"),
        (stop > dereg, f"stopTimeout {stop:g} > deregistration_delay {dereg:g}"),
        (stop > stop_delay + grace,
         f"stopTimeout {stop:g} > stop_delay_s {stop_delay:g} + grace_period_seconds {grace:g}"),
        (sc_keepalive > idle,
         f"sidecar keepalive_timeout_s {sc_keepalive:g} > ALB idle_timeout {idle:g}"),
        (sc_dereg >= sc_drain,
         f"sidecar deregistration_delay {sc_dereg:g} >= sidecar drain_s {sc_drain:g}"),
        (sc_stop > sc_dereg,
         f"sidecar stopTimeout {sc_stop:g} > sidecar deregistration_delay {sc_dereg:g}"),
        (sc_stop > sc_stop_delay + sc_drain,
         f"sidecar stopTimeout {sc_stop:g} > stop_delay_s {sc_stop_delay:g} + drain_s {sc_drain:g}"),
    ]
    for ok, what in checks:
        if not ok:
            failures.append(f"{label}: {what} does not hold")
if failures:
    print("\n".join(failures), file=sys.stderr)
    sys.exit(1)
print(f"[check-terraform] timeout ordering ok ({', '.join(varsets)})", file=sys.stderr)
PY

# --- 2. terraform fmt (optional) ----------------------------------------------------------
if command -v terraform >/dev/null 2>&1; then
  if ! terraform fmt -check -recursive -list=true "$tf_dir" >"${TMPDIR:-/tmp}/tf-fmt.$$" 2>/dev/null; then
    cat "${TMPDIR:-/tmp}/tf-fmt.$$" >&2; rm -f "${TMPDIR:-/tmp}/tf-fmt.$$"
    fail "terraform fmt: the files above need \`terraform fmt\`"
  fi
  rm -f "${TMPDIR:-/tmp}/tf-fmt.$$"
  log "terraform fmt ok"
else
  log "terraform not installed: fmt check skipped"
fi

# --- 3./4. checkov --------------------------------------------------------------------------
# Every inline skip must carry a reason.
unexplained=$(grep -rnE '#[[:space:]]*checkov:skip=[A-Z0-9_]+[[:space:]]*(:[[:space:]]*)?$' \
  "$tf_dir" Dockerfile.gateway Dockerfile.sidecar || true)
[ -z "$unexplained" ] || fail "checkov skips without a reason:
$unexplained"

run_checkov() {  # label, checkov args…
  local label="$1"; shift
  local out="${TMPDIR:-/tmp}/checkov.$$.json"
  set +e
  "$ckv_venv/bin/checkov" --compact --output json --skip-download "$@" >"$out" 2>"$out.err"
  local rc=$?
  set -e
  "$ckv_venv/bin/python" - "$out" "$label" <<'PY'
import json, sys
path, label = sys.argv[1], sys.argv[2]
raw = open(path).read().strip()
data = json.loads(raw) if raw else []
reports = data if isinstance(data, list) else [data]
passed = failed = skipped = 0
for r in reports:
    if not isinstance(r, dict) or "results" not in r:
        continue
    s = r.get("summary", {})
    passed += s.get("passed", 0)
    failed += s.get("failed", 0)
    skipped += s.get("skipped", 0)
    for c in r["results"].get("failed_checks", []):
        print(f"  FAILED {c['check_id']} {c['check_name']}\n    {c['resource']} "
              f"({c['file_path']}:{c['file_line_range'][0]})", file=sys.stderr)
    for c in r["results"].get("skipped_checks", []):
        reason = (c.get("check_result") or {}).get("suppress_comment") or ""
        print(f"  skipped {c['check_id']} on {c['resource']}: {reason}", file=sys.stderr)
print(f"[check-terraform] checkov {label}: passed {passed}, failed {failed}, skipped {skipped}",
      file=sys.stderr)
sys.exit(1 if failed else 0)
PY
  local verdict=$?
  if [ $rc -ne 0 ] && [ $verdict -eq 0 ]; then
    cat "$out.err" >&2
    rm -f "$out" "$out.err"
    fail "checkov $label exited $rc"
  fi
  rm -f "$out" "$out.err"
  return $verdict
}

run_checkov terraform --directory "$tf_dir" --framework terraform \
  || fail "checkov terraform: failed checks above (fix them, or skip inline with a reason)"
run_checkov dockerfiles --file Dockerfile.gateway --file Dockerfile.sidecar --framework dockerfile \
  || fail "checkov dockerfiles: failed checks above"

echo "check-terraform: 1 passed, 0 failed"
