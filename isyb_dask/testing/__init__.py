"""Generated test data with known ground truth, shared by the test suite.

One copy each of the phantoms and fake stores that several test files use (issue 11):

* :mod:`isyb_dask.testing.stores`: a small but complete ``results.zarr`` with known effects
  (:func:`make_fake_store`) and a reader of every group of a store (:func:`read_store_groups`);
* :mod:`isyb_dask.testing.phantoms`: a smooth head moved by known rigid motion
  (:func:`moving_series`, :func:`random_walk`) and a partial-volume WM ball in a GM shell
  (:func:`shell_phantom`).

Nothing here is used by the pipeline itself.
"""

from isyb_dask.testing.phantoms import moving_series, random_walk, shell_phantom, smooth_head
from isyb_dask.testing.stores import make_fake_store, read_store_groups

__all__ = [
    "make_fake_store",
    "moving_series",
    "random_walk",
    "read_store_groups",
    "shell_phantom",
    "smooth_head",
]
