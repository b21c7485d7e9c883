"""Synthetic ISYB-like BIDS study with ground truth (``isyb synth``).

Entry point: :func:`isyb_dask.synth.cohort.generate_study`. See docs/synth.md.
"""
