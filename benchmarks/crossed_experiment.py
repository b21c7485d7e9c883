"""The crossed template experiment of ``isyb demo`` at a chosen cohort size, as markdown.

Usage::

    python benchmarks/crossed_experiment.py OUT [--subjects N] [--run]

``--run`` first runs ``isyb demo``'s design with the deface stage only
(``run_demo(OUT, n_subjects=N, workers=1, stages=("deface",))``: N/2 Chinese- and N/2
Western-shaped subjects, CNsynth and EUsynth built from disjoint 5-subject cohorts, plus the
built-in pydeface head). It then prints, from ``OUT/output/results.zarr`` and the written
files:

* mean +- SD of NMI, true-face coverage and facial relief left per population x template;
* the population x template ANOVA (split plot), the paired matched - other differences with
  95 % CI and d_z, and the Tukey table (per population and over both) for each score, over
  the two built templates (the fair comparison) and over all three;
* the NMI recomputed from the written files with each template's own mask and the union mask
  at 32-256 bins, arithmetic and Studholme normalisation (docs/deface.md);
* with ``--faces``: dlib HOG face detection on the 3-D render of every generated original
  head (study and template cohorts; issue 13 acceptance, docs/synth.md).

Results go to docs/deface.md ("What the demo shows").
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import nibabel as nb
import numpy as np
import pandas as pd

from isyb_dask.deface.nmi import normalized_mutual_information
from isyb_dask.pipeline.demo import MATCHED, _populations, run_demo
from isyb_dask.stats.crossed import crossed_tests

SCORES = ("nmi", "face_coverage", "face_relief_mm")
BUILT = ("CNsynth", "EUsynth")


def _load(out: Path, dest: str = "output") -> tuple[pd.DataFrame, list[str], list[str]]:
    import xarray as xr

    dfc = xr.open_zarr(out / dest / "results.zarr", group="deface",
                       consolidated=False).load()
    pops = _populations(out / "bids")
    subs = [str(s) for s in dfc["subject"].values]
    templates = [str(t) for t in dfc["template"].values]
    rows = []
    for score in SCORES + ("face_voxels_changed", "brain_voxels_changed"):
        y = dfc[score].transpose("subject", "template").values.astype(float)
        for i, s in enumerate(subs):
            for j, t in enumerate(templates):
                rows.append({"subject": s, "population": pops[s], "template": t,
                             "score": score, "value": y[i, j]})
    return pd.DataFrame(rows), subs, templates


def _matrix(long: pd.DataFrame, score: str, templates) -> tuple[np.ndarray, np.ndarray]:
    w = long[long.score == score].pivot(index="subject", columns="template", values="value")
    pops = long.drop_duplicates("subject").set_index("subject").loc[w.index, "population"]
    return w[list(templates)].to_numpy(), pops.to_numpy()


def _md(df: pd.DataFrame, cols) -> str:
    return df[list(cols)].to_markdown(index=False, floatfmt=".4g")


def report_scores(long: pd.DataFrame, templates) -> None:
    print("## Scores (mean +- SD)\n")
    g = long.groupby(["score", "population", "template"])["value"].agg(["mean", "std", "count"])
    print(g.to_markdown(floatfmt=".4g"), "\n")
    for score in SCORES:
        for label, tset in (("built templates", BUILT), ("all templates", templates)):
            y, pop = _matrix(long, score, tset)
            ok = np.isfinite(y).all(axis=1)
            res = crossed_tests(y[ok], list(tset), pop[ok], MATCHED)
            print(f"### {score}, {label} (n = {ok.sum()})\n")
            print(_md(res["anova"], [c for c in ("effect", "df1", "df2", "F", "p", "p_gg",
                                                 "np2") if c in res["anova"]]), "\n")
            print(_md(res["paired"], ("population", "matched", "other", "n", "difference",
                                      "ci_low", "ci_high", "dz", "dz_low", "dz_high", "t",
                                      "p")), "\n")
            print(_md(res["tukey"], ("database", "template_1", "template_2", "difference",
                                     "se", "df", "p_adj", "ci_low", "ci_high")), "\n")


def nmi_sensitivity(out: Path, subs, templates, bins=(32, 64, 128, 256),
                    dest: str = "output") -> pd.DataFrame:
    """NMI recomputed from the written files: own vs union mask, bins, normalisation."""
    pops = _populations(out / "bids")
    rows = []
    for s in subs:
        o_img = nb.load(str(out / "bids" / s / "anat" / f"{s}_T1w.nii.gz"))
        o = np.asarray(o_img.dataobj, dtype=np.float64)
        d = {}
        for t in templates:
            p = out / dest / s / "anat" / f"{s}_desc-defaced{t}_T1w.nii.gz"
            if p.exists():
                d[t] = np.asarray(nb.load(str(p)).dataobj, dtype=np.float64)
        if len(d) < len(templates):  # a template failed: the union mask would differ
            continue
        union = np.zeros(o.shape, bool)
        own = {t: v != o for t, v in d.items()}
        for m in own.values():
            union |= m
        for t, v in d.items():
            for mask_name, m in (("own", own[t]), ("union", union)):
                for b in bins:
                    for avg in ("arithmetic", "studholme"):
                        if avg == "studholme" and b != 64:
                            continue
                        rows.append({"subject": s, "population": pops[s], "template": t,
                                     "mask": mask_name, "bins": b, "average": avg,
                                     "voxels": int(m.sum()),
                                     "nmi": normalized_mutual_information(
                                         o[m], o[m] - v[m], bins=b, average=avg)})
    return pd.DataFrame(rows)


def face_detection(out: Path) -> pd.DataFrame:
    """Render every generated original head and run the face detector on its views."""
    from isyb_dask.deface.audit import analyse_views
    from isyb_dask.deface.render import render_geometry, render_views

    rows = []
    heads = sorted(out.glob("bids/sub-*/anat/sub-*_T1w.nii.gz")) + sorted(
        out.glob("template-cohorts/*/sub-*/anat/sub-*_T1w.nii.gz"))
    for path in heads:
        img = nb.as_closest_canonical(nb.load(str(path)))
        data = np.asarray(img.dataobj, dtype=np.float32)
        faces = analyse_views(render_views(data, img.affine, render_geometry(data, img.affine)))
        rows.append({"head": path.name.split("_")[0], "set": path.parts[-4],
                     "frontal_detected": faces[0].detected,
                     "views_detected": sum(f.detected for f in faces),
                     "best_score": max(f.score for f in faces)})
    return pd.DataFrame(rows)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--subjects", type=int, default=32)
    ap.add_argument("--run", action="store_true")
    ap.add_argument("--seed", type=int, default=2022)
    ap.add_argument("--faces", action="store_true", help="face detection on every original")
    ap.add_argument("--output-dir", default="output",
                    help="folder of OUT holding results.zarr and the defaced files")
    a = ap.parse_args(argv)
    if a.run:
        t0, c0 = time.time(), time.process_time()
        rc = run_demo(a.out, n_subjects=a.subjects, seed=a.seed, workers=1,
                      stages=("deface",))
        print(f"run: exit {rc}, {time.time() - t0:.0f} s wall, "
              f"{time.process_time() - c0:.0f} s CPU (this process)")
    long, subs, templates = _load(a.out, a.output_dir)
    print(f"# Crossed experiment: {len(subs)} subjects, templates {templates}\n")
    report_scores(long, templates)
    sens = nmi_sensitivity(a.out, subs, templates, dest=a.output_dir)
    stored = long[long.score == "nmi"].set_index(["subject", "template"])["value"]
    own64 = sens[(sens["mask"] == "own") & (sens.bins == 64) & (sens.average == "arithmetic")]
    dev = np.abs(own64.set_index(["subject", "template"])["nmi"] - stored.loc[
        own64.set_index(["subject", "template"]).index]).max()
    print(f"## NMI sensitivity (recomputed; max |own/64/arithmetic - stored| = {dev:.2g})\n")
    tab = sens.groupby(["mask", "average", "bins", "population", "template"])["nmi"].mean()
    print(tab.unstack(["population", "template"]).to_markdown(floatfmt=".4f"), "\n")
    vox = sens[(sens.bins == 64) & (sens.average == "arithmetic")].groupby(
        ["mask", "population", "template"])["voxels"].mean()
    print(vox.unstack(["population", "template"]).to_markdown(floatfmt=".0f"), "\n")
    # per mask/bins/normalisation: matched - other built template, paired, per population
    print("### Matched - other built template per setting (mean, d_z, p)\n")
    out_rows = []
    for (mask, avg, b), g in sens.groupby(["mask", "average", "bins"]):
        w = g.pivot(index="subject", columns="template", values="nmi")
        pop = g.drop_duplicates("subject").set_index("subject").loc[w.index, "population"]
        res = crossed_tests(w[list(BUILT)].to_numpy(), list(BUILT), pop.to_numpy(), MATCHED)
        inter = res["anova"].set_index("effect").loc["population:template"]
        for r in res["paired"].itertuples():
            out_rows.append({"mask": mask, "average": avg, "bins": b, "population": r.population,
                             "difference": r.difference, "dz": r.dz, "p": r.p,
                             "interaction_p": inter["p"]})
    print(pd.DataFrame(out_rows).to_markdown(index=False, floatfmt=".4g"))
    if a.faces:
        c0 = time.process_time()
        fd = face_detection(a.out)
        print(f"\n## Face detection on the originals ({time.process_time() - c0:.0f} s CPU)\n")
        print(f"{int(fd.frontal_detected.sum())} of {len(fd)} heads detected in the frontal "
              f"view; views detected min {fd.views_detected.min()} of 3; best score "
              f"min {fd.best_score.min():.2f}, median {fd.best_score.median():.2f}")
        print(fd.to_markdown(index=False, floatfmt=".3g"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
