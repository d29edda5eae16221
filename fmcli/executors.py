"""Where independent tasks run (cv folds, tune candidates, prediction shards): local worker
processes, or a Dask cluster.

- by default, local processes: one per core (at most one per task), started with "spawn" (a
  forked copy of a process whose numba thread pool is running can deadlock) when the executor
  opens, each running compiled kernels on cores // processes threads, and a training task's
  iterations on all cores once the other processes leave them free (config.share_cores);
  nothing to install or start;
- on Dask (`dask.distributed`, the optional extra `fmcli[dask]`): at a scheduler address
  (`--scheduler tcp://HOST:PORT` or DASK_SCHEDULER_ADDRESS), or on a new `LocalCluster` of
  `--workers N` processes with one task thread each (numba's workqueue threading layer aborts
  when two threads of one process run parallel kernels at once), whose tasks share the cores
  as local processes do.

A task is a module-level function and a plain dict; its result depends only on the dict (each
task carries its own seed), so any number of workers in any order gives the same results.
Results come back in task order. A task that raises fails the run with a message naming the
task; Dask retries a task whose worker died (`retries`) before it gives up.
"""

import contextlib
import logging
import os
import uuid

from fmcli.errors import FmcliError

SCHEDULER_ENV = "DASK_SCHEDULER_ADDRESS"
CONNECT_TIMEOUT = "5s"


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


def _ceiling():
    """NUMBA_NUM_THREADS of our workers: the one this process was given, else every core."""
    return os.environ.get("NUMBA_NUM_THREADS") or str(cores())


def _init_worker(share):
    """A local worker process: kernels on its share of the cores, numba's ceiling at all of them
    (config.share_cores); numba is imported here, while the parent still reads and splits."""
    os.environ["NUMBA_NUM_THREADS"] = _ceiling()
    from fmcli.config import share_cores

    share_cores(share)


def _started():
    return None


def _in_share(fn, share, spec):
    """fn(spec) on a Dask worker of our LocalCluster, whose thread owns `share` of the cores
    (numba's thread count is per thread: set for the task's own)."""
    from fmcli.config import share_cores

    share_cores(share)
    return fn(spec)


@contextlib.contextmanager
def executor(workers=None, scheduler=None, tasks=None):
    """An object whose `map(fn, specs, names)` is [fn(spec) for spec in specs] in task order:
    on Dask when a scheduler (given, or the environment's) or a worker count is given, else on
    up to `tasks` local processes. Opened before any data is read, so an unreachable scheduler
    fails the run at once; `names[i]` names task i in messages."""
    scheduler = scheduler or os.environ.get(SCHEDULER_ENV) or None
    if scheduler is not None or workers:
        with _dask_client(scheduler, workers or cores()) as client:
            # a LocalCluster of ours: its workers share this machine's cores as local processes do
            yield _Dask(client, threads_per_task(workers or cores()) if scheduler is None else 0)
        return
    processes = min(tasks or cores(), cores())
    if processes <= 1:
        yield _Serial()
        return
    import concurrent.futures
    import multiprocessing

    with concurrent.futures.ProcessPoolExecutor(processes, mp_context=multiprocessing.get_context("spawn"),
                                                initializer=_init_worker,
                                                initargs=(threads_per_task(processes),)) as pool:
        for _ in range(processes):  # each submit starts a process (none is idle yet): start them now
            pool.submit(_started)
        yield _Local(pool)


class _Serial:
    def map(self, fn, specs, names):
        return [_result(lambda spec=spec: fn(spec), name) for spec, name in zip(specs, names)]


class _Local:
    def __init__(self, pool):
        self.pool = pool

    def map(self, fn, specs, names):
        futures = [self.pool.submit(fn, spec) for spec in specs]
        return [_result(f.result, name) for f, name in zip(futures, names)]


class _Dask:
    RETRIES = 2   # a task whose worker died runs again, up to this many times

    def __init__(self, client, share=0):
        self.client = client
        self.share = share      # a LocalCluster of ours: each task's share of the cores (_in_share)

    def map(self, fn, specs, names):
        import functools

        from dask.distributed import wait

        if self.share:
            fn = functools.partial(_in_share, fn, self.share)
        futures = [self.client.submit(fn, spec, key=f"fmcli-{name.replace(' ', '-')}-{uuid.uuid4().hex[:12]}",
                                      pure=False, retries=self.RETRIES) for spec, name in zip(specs, names)]
        wait(futures)
        results = []
        for f, name in zip(futures, names):
            if f.status == "error" and type(f.exception()).__name__ == "KilledWorker":
                raise TaskError(f"{name} failed on Dask: its worker died ({self.RETRIES} retries)")
            results.append(_result(f.result, name))
        return results


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


@contextlib.contextmanager
def _dask_client(scheduler, workers):
    """A Dask client: connected to `scheduler`, or to a new LocalCluster of `workers` processes
    (closed after). Dask's own log lines are kept off stderr: only errors are reported, ours."""
    try:
        from dask.distributed import Client, LocalCluster
    except ImportError:
        raise FmcliError("running on Dask needs dask.distributed: pip install 'fmcli[dask]'") from None
    logging.getLogger("distributed").setLevel(logging.CRITICAL)
    if scheduler is None:
        with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None,
                          silence_logs=logging.CRITICAL,
                          env={"NUMBA_NUM_THREADS": _ceiling()}) as cluster, \
                Client(cluster) as client:
            yield client
        return
    try:
        client = Client(scheduler, timeout=CONNECT_TIMEOUT)
    except (OSError, TimeoutError, ValueError) as e:
        raise FmcliError(f"cannot reach the Dask scheduler at {scheduler}: {e}") from None
    with client:
        yield client
