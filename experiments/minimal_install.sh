#!/usr/bin/env bash
# `pip install .` with no extras, in a fresh virtual environment: encode, decode and info
# work, and neither DeepSpeed, NVIDIA DALI nor TensorBoard is installed (issue 9).
#   bash experiments/minimal_install.sh        # prints what it checks; exit 0 when all hold
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
python3 -m venv "$work/venv"
"$work/venv/bin/pip" install -q "$root" 2>&1 | grep -v "^WARNING: Location" || true
for module in deepspeed nvidia.dali tensorboard; do
  if "$work/venv/bin/python" -c "import importlib.util as u, sys; sys.exit(u.find_spec('${module%%.*}') is None or u.find_spec('$module') is None)"; then
    echo "minimal_install: $module is installed" >&2; exit 1
  fi
  echo "not installed: $module"
done
clip="$root/../shared/data/video/cars_320x240_30f.y4m"
if [ ! -f "$clip" ]; then  # a few frames of a test pattern, written by PyAV
  clip="$work/clip.y4m"
  "$work/venv/bin/python" -c "
import av, numpy as np
with av.open('$clip', 'w', format='yuv4mpegpipe') as out:
    s = out.add_stream('rawvideo', rate=25); s.width, s.height, s.pix_fmt = 320, 240, 'yuv420p'
    for i in range(5):
        rgb = np.zeros((240, 320, 3), np.uint8); rgb[..., 0] = np.arange(320) % 256; rgb[..., 1] = 8 * i
        out.mux(s.encode(av.VideoFrame.from_ndarray(rgb, format='rgb24')))
    out.mux(s.encode(None))"
fi
cd "$work"
"$work/venv/bin/dualcodec" encode "$clip" -o dual.mp4 --frames 5 --scale 2  # the model itself, not --scale auto
"$work/venv/bin/dualcodec" decode dual.mp4 -o dual.y4m -q
"$work/venv/bin/dualcodec" info dual.mp4
echo "minimal_install: encode, decode and info work without the training stack"
