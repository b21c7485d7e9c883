"""isyb_dask.report subpackage."""
