"""isyb_dask.metrics subpackage."""
