"""isyb_dask.synth subpackage."""
