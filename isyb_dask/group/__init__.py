"""Group level: what runs once over every subject's results in the store.

Modules, in the order the runner calls them (``pipeline/runner.py``):

* :mod:`~isyb_dask.group.exclusion`: the 3-SD and mean-FD rules (pure functions on tables);
* :mod:`~isyb_dask.group.qc`: ``run_qc_group``, exclusion applied to ``participants``,
  group IQM tables and Figures 1-2;
* :mod:`~isyb_dask.group.moments` and :mod:`~isyb_dask.group.maps`: mean/SD/n maps per metric
  and vertex by a streaming Dask reduction over ``surface/value`` (``run_group_maps``),
  Figures 3-4.

The statistics (``isyb_dask.stats``), the re-identification audit (``isyb_dask.deface.reid``)
and the report (``isyb_dask.report``) follow as packages of their own.
"""
