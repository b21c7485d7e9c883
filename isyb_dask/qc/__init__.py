"""isyb_dask.qc subpackage."""
