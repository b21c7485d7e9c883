"""isyb_dask.cli subpackage."""
