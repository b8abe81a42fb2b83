#!/bin/sh
# Install exactly what uv.lock pins, every file checked against its locked hash, into one Python
# environment. Every install path runs this: `make install` (the dev venv), the three
# Dockerfiles, and the BentoML venv of `make bench-peers`.
#
#   scripts/lock_install.sh PYTHON EXTRAS [editable|project|none]
#
# PYTHON  the environment's interpreter (a venv made with `python -m venv`)
# EXTRAS  the project's extras to install, comma-separated (`all,dev`, `api`, `bench-peer`)
# mode    editable: the project itself as an editable install (the default); project: a
#         normal install (images); none: the locked dependencies only; latest: not the lock
#         but the newest versions pyproject.toml allows (`make test-latest`), project editable
#
# The environment ends up with exactly the locked packages of those extras (`uv pip sync`
# removes any other), plus the project. The index is the one pip is configured with where this
# runs (PIP_INDEX_URL, or index-url in pip's configuration; PyPI when neither is set): uv reads
# no pip configuration, so it is passed on. uv.lock names the files' hashes, and any index that
# serves the same files serves this install. uv itself is the version uv.lock pins.
set -eu
py=$1
extras=$2
mode=${3:-editable}
root=$(cd "$(dirname "$0")/.." && pwd)
lock=$root/uv.lock

version=$(sed -n '/^name = "uv"$/{n;s/^version = "\(.*\)"$/\1/p;}' "$lock")
[ -n "$version" ] || { echo "lock_install: uv.lock pins no uv" >&2; exit 1; }
# pip_config PYTHON KEY: KEY's value in that pip's configuration (any scope), or nothing
pip_config() { "$1" -m pip config list 2>/dev/null | sed -n "s/^[a-z:]*\.$2='\(.*\)'$/\1/p" | head -n 1; }
index=${PIP_INDEX_URL:-$(pip_config "$py" index-url)}
[ -n "$index" ] || index=$(pip_config python3 index-url || true)
# and the certificates pip trusts (a TLS-inspecting proxy's CA), where none is set for uv
cert=${SSL_CERT_FILE:-$(pip_config "$py" cert)}
[ -n "$cert" ] || cert=$(pip_config python3 cert || true)

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
uv=$(dirname "$py")/uv
if [ ! -x "$uv" ] || [ "$("$uv" --version | cut -d' ' -f2)" != "$version" ]; then
  python3 -m venv "$tmp/uv"
  "$tmp/uv/bin/pip" install -q --disable-pip-version-check "uv==$version"
  uv=$tmp/uv/bin/uv
fi

export UV_NO_PROGRESS=1
[ -z "$cert" ] || export SSL_CERT_FILE="$cert"
[ -z "$index" ] || export UV_DEFAULT_INDEX="$index"
if [ "$mode" = latest ]; then
  exec "$uv" pip install --quiet --python "$py" --upgrade -e "$root[$extras]"
fi

set --
for extra in $(echo "$extras" | tr ',' ' '); do set -- "$@" --extra "$extra"; done
"$uv" export --project "$root" --frozen --no-emit-project --no-header --format requirements-txt \
  "$@" -o "$tmp/requirements.txt" >/dev/null
"$uv" export --project "$root" --frozen --no-emit-project --no-header --format requirements-txt \
  --only-group build -o "$tmp/build.txt" >/dev/null
"$uv" pip sync --quiet --python "$py" --require-hashes "$tmp/requirements.txt"
case $mode in
  editable) "$uv" pip install --quiet --python "$py" --no-deps --build-constraints "$tmp/build.txt" -e "$root" ;;
  project) "$uv" pip install --quiet --python "$py" --no-deps --build-constraints "$tmp/build.txt" "$root" ;;
  none) ;;
  *) echo "lock_install: unknown mode $mode (editable, project or none)" >&2; exit 2 ;;
esac
