"""ultralytics' own benchmark and val beside edgekit's bench, on the same YOLO model and held-out images:

    python benchmarks/ultralytics_bench.py MODEL_DIR [--eval-images 50]   # -> benchmarks/results/ultralytics_vs_edgekit.*

The work is edgekit.profile.ultralytics (which `edgekit bench` also runs for detectors); this is its script."""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edgekit.profile.ultralytics import get_args_parser, main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(get_args_parser().parse_args()))
