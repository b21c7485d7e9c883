"""Assemble BENCHMARKS.md from the per-area result files ``benchmarks/results_*.md``.

Usage: ``python benchmarks/make_benchmarks_md.py`` (from the repository root).
Each results file records its own command, machine and numbers; this script only
concatenates them in a fixed order under a common header.
"""

from __future__ import annotations

from pathlib import Path

ORDER = ["participant", "anatomy", "anatomy_speed", "t1w_side", "deface", "deface_variants", "face_detectors", "face_blazeface", "audit", "morphometry", "metrics_stage", "report", "qc_anat", "qc_func", "metrics_volume", "group_maps", "store", "stats", "scale", "synth"]
HEADER = """# Benchmarks

Every number below was measured with the command given in its section, on this project's
machine (`nproc` = 2, Intel Xeon, 24 GB). While most were measured, up to eight engineers
shared the two cores (load average 6-14), so wall times are inflated; each section says
whether it reports wall or CPU time, and the ratios are always against a baseline run in the
same process seconds apart. Targets come from the issues.

"""


def main() -> None:
    root = Path(__file__).resolve().parent
    parts = [HEADER]
    files = {p.stem.removeprefix("results_"): p for p in root.glob("results_*.md")}
    for name in ORDER + sorted(set(files) - set(ORDER)):
        if name in files:
            text = files[name].read_text().strip()
            parts.append(text.replace("\n# ", "\n## ").replace("# ", "## ", 1) + "\n")
    (root.parent / "BENCHMARKS.md").write_text("\n".join(parts))


if __name__ == "__main__":
    main()
