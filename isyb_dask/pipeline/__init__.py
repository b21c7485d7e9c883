"""isyb_dask.pipeline subpackage."""
