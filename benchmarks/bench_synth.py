"""Speed of the synthetic study generator.

Prints the wall time of one subject (2 mm T1w, 80-volume BOLD, DWI, ASL) and of each
simulator, as ratios to a baseline measured in the same process: reading the pydeface head
template (176x256x256 int16) and writing it back as ``.nii.gz`` (the I/O floor of any
generator built on that template).

Run: ``OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_synth.py``
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import nibabel as nb
import numpy as np


def _best(fn, repeat: int = 3, clock=time.perf_counter) -> float:
    times = []
    for _ in range(repeat):
        t0 = clock()
        fn()
        times.append(clock() - t0)
    return min(times)


def main() -> None:
    from isyb_dask.atlas import builtin_head_paths
    from isyb_dask.synth.anatomy import draw_anatomy, load_template_maps
    from isyb_dask.synth.asl import synth_asl
    from isyb_dask.synth.bold import synth_bold
    from isyb_dask.synth.cohort import generate_study
    from isyb_dask.synth.dwi import synth_dwi
    from isyb_dask.synth.fields import Grid
    from isyb_dask.synth.t1w import synth_t1w

    head, _ = builtin_head_paths()
    tmp = Path(tempfile.mkdtemp(prefix="bench-synth-"))

    def baseline() -> None:
        img = nb.load(str(head))
        nb.save(nb.Nifti1Image(np.asarray(img.dataobj), img.affine), str(tmp / "copy.nii.gz"))

    t_base = _best(baseline)
    t0 = time.perf_counter()
    for f in (2, 3, 4):
        load_template_maps(f)
    t_load = time.perf_counter() - t0

    counter = iter(range(1000))

    def one_subject() -> None:
        generate_study(tmp / f"s{next(counter)}", 1, "chinese", seed=0)

    t_subj = _best(one_subject, 2)
    cpu_base = _best(baseline, 3, time.process_time)
    cpu_subj = _best(one_subject, 2, time.process_time)
    maps2, maps3, maps4 = (load_template_maps(f) for f in (2, 3, 4))
    rng = np.random.default_rng(0)
    anat = draw_anatomy(rng, "chinese", "M", maps2)
    c = anat.to_scanner(maps2.brain_centre[:, None])[:, 0]
    parts = {
        "draw_anatomy": lambda: draw_anatomy(np.random.default_rng(1), "chinese", "M", maps2),
        "synth_t1w (96x128x128)": lambda: synth_t1w(
            anat,
            maps2,
            Grid.centred((96, 128, 128), 2.0, maps2.head_centre),
            rng,
            snr=30,
            gain=2.5,
        ),
        "synth_bold (44x54x40x80)": lambda: synth_bold(
            anat,
            maps4,
            Grid.centred((44, 54, 40), 4.0, c),
            rng,
            n_volumes=80,
            tr=2.0,
            snr=60,
            target_fd=0.1,
        ),
        "synth_dwi (56x68x50x32)": lambda: synth_dwi(
            anat, maps3, Grid.centred((56, 68, 50), 3.0, c), rng, snr=25
        ),
        "synth_asl (44x54x36x20)": lambda: synth_asl(
            anat, maps4, Grid.centred((44, 54, 36), 4.0, c), rng, snr=300
        ),
    }
    print(f"baseline: read + write pydeface template .nii.gz: {t_base:.2f} s")
    print(
        f"first-use template/atlas loading (factors 2, 3, 4): {t_load:.2f} s "
        f"(ratio {t_load / t_base:.1f})"
    )
    print(
        f"one subject, all modalities, files written: {t_subj:.2f} s (ratio {t_subj / t_base:.1f})"
    )
    print(
        f"  CPU time (process_time): subject {cpu_subj:.2f} s, baseline {cpu_base:.2f} s "
        f"(ratio {cpu_subj / cpu_base:.1f}); wall and CPU differ on a loaded machine"
    )
    for name, fn in parts.items():
        t = _best(fn, 2)
        print(f"  {name}: {t:.2f} s (ratio {t / t_base:.2f})")


if __name__ == "__main__":
    main()
