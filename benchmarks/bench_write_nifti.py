"""Benchmark: memory and CPU of ``io.nifti.write_nifti`` against the whole-payload write.

The baseline is the previous implementation (serialise the image with ``img.to_bytes()``,
then compress the payload with ISA-L); ``write_nifti`` now streams nibabel's writer into the
compressor. Both write the same bytes (``tests/test_nifti.py``). Peak traced memory
(``tracemalloc``) and process CPU seconds are measured in the same process, best of 3.

    .venv/bin/python benchmarks/bench_write_nifti.py [--shape 100 100 70 60]

Prints both figures and the ratios (this / baseline).
"""

from __future__ import annotations

import argparse
import tempfile
import time
import tracemalloc
from pathlib import Path

import nibabel as nb
import numpy as np


def baseline_write(img: nb.Nifti1Image, path: Path) -> None:
    """The previous ``write_nifti`` body: whole payload in memory, then compressed."""
    from isal import igzip

    payload = img.to_bytes()
    with igzip.open(path, "wb", compresslevel=1) as fh:
        fh.write(payload)


def measure(fn, img: nb.Nifti1Image, path: Path) -> tuple[float, float]:
    """(peak traced MB, CPU s), best of 3."""
    best = (np.inf, np.inf)
    for _ in range(3):
        tracemalloc.start()
        t0 = time.process_time()
        fn(img, path)
        cpu = time.process_time() - t0
        peak = tracemalloc.get_traced_memory()[1] / 1e6
        tracemalloc.stop()
        best = (min(best[0], peak), min(best[1], cpu))
    return best


def main() -> None:
    """Write one float32 series both ways and print the comparison."""
    from isyb_dask.io.nifti import write_nifti

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", type=int, nargs="+", default=[100, 100, 70, 60])
    args = ap.parse_args()
    data = np.random.default_rng(0).normal(1000, 50, size=args.shape).astype(np.float32)
    img = nb.Nifti1Image(data, np.diag([2.0, 2.0, 2.0, 1.0]))
    with tempfile.TemporaryDirectory() as tmp:
        base = measure(baseline_write, img, Path(tmp) / "base.nii.gz")
        ours = measure(lambda i, p: write_nifti(i, p), img, Path(tmp) / "ours.nii.gz")
    print(f"image {tuple(args.shape)} float32, {data.nbytes / 1e6:.0f} MB")
    print(f"baseline (payload): peak {base[0]:.1f} MB, CPU {base[1]:.3f} s")
    print(f"write_nifti (streamed): peak {ours[0]:.1f} MB, CPU {ours[1]:.3f} s")
    print(f"ratios this/baseline: memory {ours[0] / base[0]:.3f}, CPU {ours[1] / base[1]:.2f}")


if __name__ == "__main__":
    main()
