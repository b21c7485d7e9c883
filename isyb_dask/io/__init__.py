"""isyb_dask.io subpackage."""
