"""isyb-dask: face masking with interchangeable head templates, QC and surface metrics on Dask."""

__version__ = "0.1.0"
