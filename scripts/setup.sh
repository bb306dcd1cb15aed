#!/usr/bin/env bash
# Creates .venv (if needed) and installs pipeserve into it with the extras named in $1
# (default: dev); "ocr" among them also installs rapidocr-onnxruntime. Safe to run again.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
extras="${1:-dev}"
python="${PYTHON:-python3}"
if [ ! -x "$root/.venv/bin/python" ]; then
  "$python" -m venv "$root/.venv"
fi
# --no-warn-conflicts: pip's resolver would report, on every install beside it, the one conflict
# made on purpose below (rapidocr-onnxruntime without opencv-python); `pip check` at the end
# reports any other.
pip=("$root/.venv/bin/python" -m pip install -q --disable-pip-version-check --no-warn-conflicts)
"${pip[@]}" --upgrade pip
pip_extras="$(echo ",$extras," | sed 's/,ocr,/,vision,onnx,/; s/^,//; s/,$//')"
"${pip[@]}" -e "$root[$pip_extras]"
if [[ ",$extras," == *",ocr,"* ]]; then
  # rapidocr-onnxruntime depends on opencv-python, the GUI build, which needs libGL and shares
  # the cv2 folder with opencv-python-headless: install it without that dependency.
  "${pip[@]}" --no-deps "rapidocr-onnxruntime==1.4.4"
  "${pip[@]}" "pyclipper>=1.2" "shapely>=1.7.1,!=2.0.4" "six>=1.15" PyYAML "Pillow>=10.1" tqdm
fi
# Whatever was installed before (opencv-python over headless, say), make `import cv2` work.
if "$root/.venv/bin/python" -c "import importlib.util as u; exit(0 if u.find_spec('cv2') else 1)" \
   && ! "$root/.venv/bin/python" -c "import cv2" 2>/dev/null; then
  "${pip[@]}" --force-reinstall --no-deps opencv-python-headless
  "$root/.venv/bin/python" -c "import cv2"
fi
# Dependency conflicts, less the deliberate one: printed, so that a real one is not missed.
if ! conflicts="$("$root/.venv/bin/python" -m pip check 2>&1)"; then
  conflicts="$(grep -v -E '^rapidocr-onnxruntime [^ ]+ requires opencv-python' <<<"$conflicts" || true)"
  if [ -n "$conflicts" ]; then
    echo "pip check:" >&2
    echo "$conflicts" >&2
  fi
fi
