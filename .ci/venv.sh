#!/usr/bin/env bash
# Make (or reuse) a virtual environment and pip-install into it:
#
#   bash .ci/venv.sh DIR PIP-INSTALL-ARGS...     e.g.  bash .ci/venv.sh .venv -e .
#
# Nothing is installed into the system Python, so this works where a bare `pip install` is
# refused (PEP 668: Debian's and Ubuntu's system Python). The interpreter is $PYTHON, else
# python3; it must be 3.11 or newer. Debian ships the venv module without ensurepip (it is in
# the python3.X-venv package): that one package is installed with apt-get, through sudo when not
# root, which is the only change made outside DIR. Used by the README's quick start and .ci/run.
set -euo pipefail
cd "$(dirname "$0")/.."

die() {
    echo "venv.sh: $*" >&2
    exit 1
}

(($# >= 2)) || die "usage: bash .ci/venv.sh DIR PIP-INSTALL-ARGS..."
dir=$1
shift
python=${PYTHON:-python3}

command -v "$python" >/dev/null || die "$python not found: install Python 3.11 or newer"
new_enough='import sys; sys.exit(sys.version_info < (3, 11))'
"$python" -c "$new_enough" || die "tlsprobe needs Python 3.11 or newer; $python is $("$python" -V 2>&1)"

if [[ -e $dir && ! -f $dir/pyvenv.cfg && -n $(ls -A "$dir") ]]; then
    die "$dir exists and is not a virtual environment"
fi
if ! { [[ -x $dir/bin/python ]] && "$dir/bin/python" -c "$new_enough"; }; then
    if ! "$python" -c 'import ensurepip' 2>/dev/null; then
        package="python$("$python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')-venv"
        command -v apt-get >/dev/null ||
            die "$python cannot create a virtual environment (no ensurepip) and this is no Debian"
        sudo=()
        if [[ $(id -u) != 0 ]]; then
            command -v sudo >/dev/null || die "run as root, or: apt-get install $package"
            sudo=(sudo)
        fi
        echo "== installing $package: $python needs it to create a virtual environment" >&2
        "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
        "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
            apt-get install -y -qq --no-install-recommends "$package" >/dev/null
    fi
    # --clear: a half-made one from an earlier failure, or one whose interpreter is gone.
    "$python" -m venv --clear "$dir"
fi
# Not -q: each package is shown as it is collected and installed (a fresh install takes
# minutes); the progress bar only where someone watches a terminal.
progress=()
[[ -t 1 ]] || progress=(--progress-bar off)
"$dir/bin/python" -m pip install --disable-pip-version-check "${progress[@]}" "$@"
