#!/usr/bin/env bash
# Creates (or updates) the virtual environment that runs the MONAI Label server and app (label_app/):
# torch 2.14.1 + torchvision 0.29.1 (MONAI Label needs torchvision) and this package with its
# `label` extra, installed editable from this checkout. It is kept apart from the main environment
# because MONAI Label 0.8.5's pydicom-seg downgrades numpy below 2 and jsonschema below 4.
#
#   bash scripts/setup_label_venv.sh            # -> <repo>/.venv-label
#   MONAI_DANIL_LABEL_VENV=/some/dir bash scripts/setup_label_venv.sh
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
venv="${MONAI_DANIL_LABEL_VENV:-$root/.venv-label}"
python="${PYTHON:-python3}"

[ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
pip=("$venv/bin/python" -m pip install --quiet)
"${pip[@]}" --upgrade pip setuptools wheel
"${pip[@]}" torch==2.14.1 torchvision==0.29.1
# sam2 (a MONAI Label requirement the app never uses) ships only as a source distribution; building it
# against the torch just installed, without its CUDA extension, avoids a second torch in an isolated
# build environment and a compiler toolchain.
SAM2_BUILD_CUDA=0 "${pip[@]}" --no-build-isolation "sam2>=0.4.1"
"${pip[@]}" -e "$root[label]"
"$venv/bin/python" -c "import monailabel, monai_danil, torch; print('label venv:', '$venv', 'monailabel', monailabel.__version__, 'torch', torch.__version__)"
