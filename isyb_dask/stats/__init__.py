"""isyb_dask.stats subpackage."""
