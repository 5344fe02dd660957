#!/usr/bin/env python3
"""Camera loop, shaped like jetson-inference's detectnet.py:

    python scripts/camera.py csi://0 display://0 --detector models/trained/yolo --classifier models/trained/digits
    python scripts/camera.py clip.mp4 out.mp4 results.jsonl --detector DIR --headless

Importable: get_args_parser() and main(args) -> exit code.
"""
from __future__ import annotations

import argparse
import sys


def get_args_parser() -> argparse.ArgumentParser:
    from edgekit.cli import add_camera_args

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_camera_args(p)
    return p


def main(args: argparse.Namespace) -> int:
    import logging

    from edgekit.cli import cmd_camera, run_command

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    return run_command(cmd_camera, args)


if __name__ == "__main__":
    sys.exit(main(get_args_parser().parse_args()))
