"""Running a task's work step on another machine (a Dask worker): the unit sent there, what comes back,
and the code that runs there. Nothing here imports Dask: the executor adapter does (orch.adapters.dask_executor).
"""
