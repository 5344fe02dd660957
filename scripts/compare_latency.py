#!/usr/bin/env python3
"""Latency comparison: every backend x precision on one model directory, each in its own process; a report
folder with bench.json/.csv/.md and plots.

    python scripts/compare_latency.py models/trained/digits --backends torch,onnxrt,tinygrad --precisions fp32,int8

Importable: get_args_parser() and main(args) -> exit code (the same options as `edgekit bench`).
"""
from __future__ import annotations

import argparse
import sys


def get_args_parser() -> argparse.ArgumentParser:
    from edgekit.configs import add_dataclass_args
    from edgekit.profile.matrix import BenchConfig

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_dataclass_args(p, BenchConfig, positional=("model_dir",))
    return p


def main(args: argparse.Namespace) -> int:
    import logging

    from edgekit.cli import cmd_bench, run_command

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    return run_command(cmd_bench, args)


if __name__ == "__main__":
    sys.exit(main(get_args_parser().parse_args()))
