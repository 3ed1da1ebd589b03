"""Scale-out: the cells on worker processes (pool), a job array's tasks (cells) or a Dask cluster (dask_cluster), all through run_scaled (run)."""
