#!/usr/bin/env bash
# One entry point for a fresh Debian machine:
#   bash run.sh demo   install everything, then open napari with the sample and the VoxSeg widget
#                      (no display: run the same loop headless under Xvfb and write the
#                      prediction, the model and a screenshot to voxseg-demo/)
#   bash run.sh test   install everything, then run the tests (pytest) under Xvfb
set -euo pipefail
cd "$(dirname "$0")"

PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
TORCH_VERSION=2.13.0  # pinned first: an unpinned torch pulls the CUDA build (several GB)
APT_PACKAGES="xvfb xauth libgl1 libegl1 libgl1-mesa-dri libxkbcommon-x11-0 libxcb-icccm4
 libxcb-image0 libxcb-keysyms1 libxcb-randr0 libxcb-render-util0 libxcb-xinerama0
 libxcb-xfixes0 libxcb-shape0 libxcb-cursor0 libdbus-1-3 libfontconfig1"

system_packages() {
    command -v dpkg-query >/dev/null || return 0
    local missing=()
    for p in $APT_PACKAGES; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
    done
    "$PYTHON" -c "import ensurepip, venv" 2>/dev/null || missing+=(python3-venv)
    [ ${#missing[@]} -eq 0 ] && return 0
    local sudo=""
    [ "$(id -u)" = 0 ] || sudo="sudo"
    echo "installing system packages: ${missing[*]}"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
}

python_packages() {
    [ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
    "$VENV/bin/python" -m pip install -q --upgrade pip >/dev/null
    "$VENV/bin/python" -m pip install -q "torch==$TORCH_VERSION"
    "$VENV/bin/python" -m pip install -q -e ".[pyqt6,testing]"
}

case "${1:-}" in
    demo)
        system_packages
        python_packages
        if [ -n "${DISPLAY:-}" ]; then
            exec "$VENV/bin/python" -m napari_voxseg demo
        fi
        exec xvfb-run -a -s "-screen 0 1600x1000x24" "$VENV/bin/python" -m napari_voxseg demo --headless
        ;;
    test)
        system_packages
        python_packages
        shift
        exec xvfb-run -a -s "-screen 0 1600x1000x24" "$VENV/bin/python" -m pytest "$@"
        ;;
    *)
        echo "usage: bash run.sh demo | test [pytest arguments]" >&2
        exit 2
        ;;
esac
