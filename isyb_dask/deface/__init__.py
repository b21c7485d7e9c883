"""isyb_dask.deface subpackage."""
