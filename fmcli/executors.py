"""Where independent tasks run (cv folds, tune candidates, prediction shards): local worker
processes, or a Dask cluster.

- by default, local processes: one per core (at most one per task), started with "spawn" (a
  forked copy of a process whose numba thread pool is running can deadlock), each running
  compiled kernels on cores // processes threads; nothing to install or start;
- on Dask (`dask.distributed`, the optional extra `fmcli[dask]`): at a scheduler address
  (`--scheduler tcp://HOST:PORT` or DASK_SCHEDULER_ADDRESS), or on a new `LocalCluster` of
  `--workers N` processes with one task thread each (numba's workqueue threading layer aborts
  when two threads of one process run parallel kernels at once).

A task is a module-level function and a plain dict; its result depends only on the dict (each
task carries its own seed), so any number of workers in any order gives the same results.
Results come back in task order. A task that raises fails the run with a message naming the
task; Dask retries a task whose worker died (`retries`) before it gives up.
"""

import os

from fmcli.errors import FmcliError

SCHEDULER_ENV = "DASK_SCHEDULER_ADDRESS"
CONNECT_TIMEOUT = "10s"


class TaskError(FmcliError):
    """A task failed: exit code 1, the task named."""


def cores():
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def threads_per_task(workers):
    """Kernel threads for each of `workers` concurrent tasks on this machine's cores."""
    return max(1, cores() // max(1, workers))


def _init_worker(threads):
    os.environ["NUMBA_NUM_THREADS"] = str(threads)  # before numba is imported by a task


def run_tasks(fn, specs, names, workers=None, scheduler=None, retries=2):
    """[fn(spec) for spec in specs] in task order: on Dask when a scheduler (or the environment's)
    or a worker count is given, else on local processes; `names[i]` names task i in messages."""
    specs = list(specs)
    scheduler = scheduler or os.environ.get(SCHEDULER_ENV) or None
    if scheduler is not None or workers:
        return _run_dask(fn, specs, names, scheduler, workers or cores(), retries)
    processes = min(len(specs), cores())
    if processes <= 1:
        return [_result(lambda spec=spec: fn(spec), name) for spec, name in zip(specs, names)]
    import concurrent.futures
    import multiprocessing

    with concurrent.futures.ProcessPoolExecutor(processes, mp_context=multiprocessing.get_context("spawn"),
                                                initializer=_init_worker,
                                                initargs=(threads_per_task(processes),)) as pool:
        futures = [pool.submit(fn, spec) for spec in specs]
        return [_result(f.result, name) for f, name in zip(futures, names)]


def _result(get, name):
    """get(), with a failure named after its task."""
    from concurrent.futures.process import BrokenProcessPool

    try:
        return get()
    except BrokenProcessPool:
        raise TaskError(f"{name}: its worker process died") from None
    except FmcliError as e:
        e.args = (f"{name}: {e}",)
        raise
    except Exception as e:  # a task's own failure, shown as the task's
        raise TaskError(f"{name} failed: {type(e).__name__}: {e}") from None


def dask_client(scheduler, workers):
    """A Dask client: connected to `scheduler`, or to a new LocalCluster of `workers` processes."""
    try:
        from dask.distributed import Client, LocalCluster
    except ImportError:
        raise FmcliError("running on Dask needs dask.distributed: pip install 'fmcli[dask]'") from None
    if scheduler is None:
        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                               dashboard_address=None, env={"NUMBA_NUM_THREADS": str(threads_per_task(workers))})
        return Client(cluster)
    try:
        return Client(scheduler, timeout=CONNECT_TIMEOUT)
    except (OSError, TimeoutError) as e:
        raise FmcliError(f"cannot reach the Dask scheduler at {scheduler}: {e}") from None


def _run_dask(fn, specs, names, scheduler, workers, retries):
    from dask.distributed import wait

    with dask_client(scheduler, workers) as client:
        cluster = getattr(client, "cluster", None)
        try:
            futures = [client.submit(fn, spec, key=f"fmcli-{name}-{os.getpid()}-{i}", pure=False, retries=retries)
                       for i, (spec, name) in enumerate(zip(specs, names))]
            wait(futures)
            results = []
            for f, name in zip(futures, names):
                if f.status == "error" and type(f.exception()).__name__ == "KilledWorker":
                    raise TaskError(f"{name} failed on Dask: its worker died ({retries} retries)")
                results.append(_result(f.result, name))
            return results
        finally:
            if cluster is not None:
                cluster.close()
