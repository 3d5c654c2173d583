#!/usr/bin/env bash
# Builds the two container images (Dockerfile.gateway, Dockerfile.sidecar), tags them,
# and with --push logs in to Amazon ECR and pushes them.
#
#   ops/scripts/build-and-push.sh                      # build and tag locally
#   ops/scripts/build-and-push.sh --push               # … and push to ECR
#   ops/scripts/build-and-push.sh --push --tag v1.4.0 --region eu-west-1
#   ops/scripts/build-and-push.sh --stdio-runtimes node,python --uv-tools mcp-grafana
#
# Options (each also read from the environment variable in brackets):
#   --push                   log in to ECR (aws ecr get-login-password) and push
#   --region R               AWS region [AWS_REGION, else AWS_DEFAULT_REGION, else aws configure]
#   --account ID             AWS account id [AWS_ACCOUNT_ID, else aws sts get-caller-identity]
#   --registry HOST          registry host [REGISTRY, default ID.dkr.ecr.R.amazonaws.com];
#                            set it to push somewhere else than ECR (no ECR login then)
#   --gateway-repo NAME      repository of the gateway image [GATEWAY_REPO, default mcp-gateway]
#   --sidecar-repo NAME      repository of the sidecar image [SIDECAR_REPO, default mcp-oauth-sidecar]
#   --tag T                  image tag [TAG, default: git short commit, "-dirty" if the tree
#                            has changes]; "latest" is never pushed: deploy by immutable tag
#   --platform P             docker build --platform [PLATFORM, default linux/amd64, what
#                            ops/terraform's Fargate tasks run]
#   --stdio-runtimes LIST    gateway build arg STDIO_RUNTIMES [STDIO_RUNTIMES, default none]:
#                            node, python or node,python
#   --uv-tools "PKGS"        gateway build arg UV_TOOLS [UV_TOOLS], e.g. "mcp-grafana"
#   --npm-tools "PKGS"       gateway build arg NPM_TOOLS [NPM_TOOLS]
#   --only gateway|sidecar   build just one of the two
#   --dry-run                print the commands instead of running them
#   -h, --help               this text
#
# The ECR repositories are created by ops/terraform (outputs gateway_repository_url and
# sidecar_repository_url); their names must match --gateway-repo / --sidecar-repo.
# After a push, deploy with: terraform apply -var image_tag=TAG (see docs/deploy-aws.md).
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$root"

push=0 dry=0 only=""
region="${AWS_REGION:-${AWS_DEFAULT_REGION:-}}"
account="${AWS_ACCOUNT_ID:-}"
registry="${REGISTRY:-}"
gateway_repo="${GATEWAY_REPO:-mcp-gateway}"
sidecar_repo="${SIDECAR_REPO:-mcp-oauth-sidecar}"
tag="${TAG:-}"
platform="${PLATFORM:-linux/amd64}"
stdio_runtimes="${STDIO_RUNTIMES:-}"
uv_tools="${UV_TOOLS:-}"
npm_tools="${NPM_TOOLS:-}"

usage() { sed -n '2,34p' "$0" | sed 's/^# \{0,1\}//'; }
need_value() { [ $# -ge 2 ] && [ -n "$2" ] || { echo "$1 needs a value (see --help)" >&2; exit 2; }; }

while [ $# -gt 0 ]; do
  case "$1" in
    --push) push=1 ;;
    --dry-run) dry=1 ;;
    --region) need_value "$@"; region="$2"; shift ;;
    --account) need_value "$@"; account="$2"; shift ;;
    --registry) need_value "$@"; registry="$2"; shift ;;
    --gateway-repo) need_value "$@"; gateway_repo="$2"; shift ;;
    --sidecar-repo) need_value "$@"; sidecar_repo="$2"; shift ;;
    --tag) need_value "$@"; tag="$2"; shift ;;
    --platform) need_value "$@"; platform="$2"; shift ;;
    --stdio-runtimes) need_value "$@"; stdio_runtimes="$2"; shift ;;
    --uv-tools) need_value "$@"; uv_tools="$2"; shift ;;
    --npm-tools) need_value "$@"; npm_tools="$2"; shift ;;
    --only) need_value "$@"; only="$2"; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done

case "$only" in ""|gateway|sidecar) ;; *) echo "--only takes gateway or sidecar" >&2; exit 2 ;; esac
case ",$stdio_runtimes," in
  ,,|,node,|,python,|,node\,python,|,python\,node,) ;;
  *) echo "--stdio-runtimes takes node, python or node,python (got $stdio_runtimes)" >&2; exit 2 ;;
esac
[ "$tag" != latest ] || { echo "refusing tag 'latest': deploy by an immutable tag" >&2; exit 2; }

log() { printf '[build-and-push] %s\n' "$*" >&2; }
run() {
  if [ $dry = 1 ]; then printf '+'; printf ' %q' "$@"; printf '\n'; else "$@"; fi
}

if [ -z "$tag" ]; then
  tag=$(git rev-parse --short=12 HEAD 2>/dev/null || date -u +%Y%m%d%H%M%S)
  if [ -n "$(git status --porcelain 2>/dev/null)" ]; then tag="$tag-dirty"; fi
fi

if [ $push = 1 ] && [ -z "$registry" ]; then
  command -v aws >/dev/null || [ $dry = 1 ] || { echo "--push needs the AWS CLI (aws)" >&2; exit 1; }
  [ -n "$region" ] || region=$(aws configure get region 2>/dev/null || true)
  [ -n "$region" ] || { echo "no AWS region: pass --region or set AWS_REGION" >&2; exit 1; }
  if [ -z "$account" ]; then
    if [ $dry = 1 ]; then account=123456789012
    else account=$(aws sts get-caller-identity --query Account --output text); fi
  fi
  registry="$account.dkr.ecr.$region.amazonaws.com"
  ecr=1
else
  ecr=0
fi

command -v docker >/dev/null || [ $dry = 1 ] || { echo "docker is not installed" >&2; exit 1; }

images=()
build_one() {  # name dockerfile repo [build args…]
  local name="$1" df="$2" repo="$3"; shift 3
  local local_ref="$repo:$tag"
  log "building $name: $df → $local_ref ($platform)"
  run docker build --file "$df" --platform "$platform" \
      --label "org.opencontainers.image.revision=$(git rev-parse HEAD 2>/dev/null || echo unknown)" \
      --label "org.opencontainers.image.source=mcp-gateway" \
      "$@" --tag "$local_ref" .
  if [ -n "$registry" ]; then
    run docker tag "$local_ref" "$registry/$repo:$tag"
    images+=("$registry/$repo:$tag")
  else
    images+=("$local_ref")
  fi
}

if [ -z "$only" ] || [ "$only" = gateway ]; then
  build_one gateway Dockerfile.gateway "$gateway_repo" \
    --build-arg "STDIO_RUNTIMES=$stdio_runtimes" \
    --build-arg "UV_TOOLS=$uv_tools" \
    --build-arg "NPM_TOOLS=$npm_tools"
fi
if [ -z "$only" ] || [ "$only" = sidecar ]; then
  build_one sidecar Dockerfile.sidecar "$sidecar_repo"
fi

if [ $push = 1 ]; then
  if [ $ecr = 1 ]; then
    log "logging in to $registry"
    if [ $dry = 1 ]; then
      printf '+ aws ecr get-login-password --region %q | docker login --username AWS --password-stdin %q\n' "$region" "$registry"
    else
      aws ecr get-login-password --region "$region" | docker login --username AWS --password-stdin "$registry"
    fi
  fi
  for img in "${images[@]}"; do
    log "pushing $img"
    run docker push "$img"
  done
fi

log "done: ${images[*]}"
echo "image_tag=$tag"
