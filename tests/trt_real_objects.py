"""Run by tests/export/test_trt_api_surface.py in a subprocess with one version's REAL bindings importable
(tests/trt_bindings.run_with_bindings): edgekit's subclasses of TensorRT's pybind classes made and called
through the real trampolines, and what trt.nptype does with every DataType an engine can report. Prints
JSON. argv[1]: a scratch folder."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import tensorrt_bindings as trt

sys.modules["tensorrt"] = trt  # what `import tensorrt` gives on a TensorRT install


class HostApi:
    """The CUDA adapter's calls the calibrator makes, on host memory (addresses are what it hands TensorRT)."""

    def __init__(self) -> None:
        self.copies: list[tuple[int, bytes]] = []
        self.freed: list[int] = []

    def stream_create(self) -> int:
        return 7

    def device_alloc(self, nbytes: int) -> int:
        self.buf = np.zeros(nbytes, np.uint8)
        return self.buf.ctypes.data

    def htod_async(self, dptr: int, x: np.ndarray, stream: int) -> None:
        self.copies.append((dptr, x.tobytes()))

    def stream_sync(self, stream: int) -> None:
        pass

    def device_free(self, dptr: int) -> None:
        self.freed.append(dptr)

    def stream_destroy(self, stream: int) -> None:
        pass


class Batches(list):
    nbytes = 2 * 3 * 4 * 4 * 4


def main(scratch: Path) -> dict:
    from edgekit.export.trt_build import import_tensorrt, make_logger

    out: dict = {"version": trt.__version__, "import_tensorrt": import_tensorrt() is trt}
    logger = make_logger(trt)
    logger.log(trt.ILogger.ERROR, "boom")
    logger.log(trt.ILogger.INFO, "fine")
    out["logger"] = {"is_ilogger": isinstance(logger, trt.ILogger), "errors": logger.errors}
    try:  # the stub's factory returns NULL: no builder without the native library
        trt.Builder(logger)
        out["builder"] = "made"
    except TypeError:
        out["builder"] = "TypeError"
    if hasattr(trt, "IInt8EntropyCalibrator2"):
        from edgekit.export.calibrator_trt import make_entropy_calibrator

        api, cache = HostApi(), scratch / "calib.cache"
        batches = Batches([np.full((2, 3, 4, 4), i, np.float32) for i in (1, 2)])
        cal = make_entropy_calibrator(trt, api, batches, cache)
        got = [cal.get_batch(["input"]) for _ in range(3)]
        before = cal.read_calibration_cache()
        cal.write_calibration_cache(b"table")
        out["calibrator"] = {
            "is_calibrator": isinstance(cal, trt.IInt8EntropyCalibrator2), "batch_size": cal.get_batch_size(),
            "batches": [None if g is None else [int(p) == api.buf.ctypes.data for p in g] for g in got],
            "copied": [bytes(b) == batches[i].tobytes() for i, (_, b) in enumerate(api.copies)], "seen": cal.seen,
            "cache_before": before, "cache_after": cal.read_calibration_cache().decode()}
        cal.close()
        out["calibrator"]["freed"] = api.freed == [api.buf.ctypes.data]
    nptypes = {}
    for name in sorted(trt.DataType.__members__):
        try:
            nptypes[name] = np.dtype(trt.nptype(trt.DataType.__members__[name])).name
        except TypeError:  # what the TensorRT runner catches: no numpy type (bf16, fp8, ...)
            nptypes[name] = "TypeError"
    out["nptype"] = nptypes
    return out


if __name__ == "__main__":
    print(json.dumps(main(Path(sys.argv[1]))))
