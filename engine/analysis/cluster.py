"""``--dask ADDRESS|local:N``: the analysis stages' row blocks as tasks on a Dask cluster.

Without ``--dask`` nothing here runs and Dask need not be installed: every stage
walks its row blocks in this process. With it, the same block functions run as
Dask tasks (``dask.array.from_zarr`` over the run's store, rows chunked, all
columns in one chunk; ``dask.distributed`` for the cluster), their results come
back in block order and merge with the same formulas, so the numbers do not
depend on where the blocks ran. Workers read (and write) the run directory
themselves: it must be on storage every worker can reach.
"""

from __future__ import annotations

import contextlib
import difflib
import logging
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numba

from engine.latents.store import iter_blocks

logger = logging.getLogger(__name__)

WORKER_WAIT_S = 60  # how long a command waits for the first worker of a scheduler
HOLD_SHARE = 1 / 3  # row blocks stay in the workers' memory between passes when they take at most this share of it
INSTALL = "pip install -e '.[dask]' (or pip install 'dask[distributed]')"


def _can_read(path: str) -> str | None:
    """On a worker: None when ``path`` (a Zarr store) can be read there, else why not."""
    try:
        import zarr

        zarr.open_group(path, mode="r")
        return None
    except Exception as exc:
        return f"{type(exc).__name__}: {str(exc).splitlines()[0][:120] if str(exc) else ''}"


class Cluster:
    """A Dask client and what the stages ask of it: tasks over the row blocks of a Zarr array, or any calls."""

    def __init__(self, client, progress: bool = True):
        self.client = client
        self.progress = progress

    @property
    def workers(self) -> int:
        return len(self.client.scheduler_info(n_workers=-1)["workers"])

    def check_readable(self, store: Path) -> None:
        """A one-line error naming the worker when one cannot open ``store``."""
        answers = self.client.run(_can_read, str(Path(store).resolve()))
        bad = {w: why for w, why in answers.items() if why is not None}
        if bad:
            worker, why = next(iter(bad.items()))
            raise ValueError(f"Dask worker {worker} cannot read {store} ({why}); the run directory must be on storage "
                             f"every worker can read (a shared file system), at the same path")

    def compute(self, tasks: list, desc: str = "") -> list:
        """Run delayed ``tasks``; their results in order. Progress goes to stderr (stdout holds the command's
        JSON): dask's bar over every task on a terminal, else a line a minute. On failure the tasks not yet
        run are cancelled."""
        futures = self.client.compute(tasks)
        try:
            if self.progress and futures:
                print(f"dask: {desc}", file=sys.stderr)
                _show_progress(futures)
            return self.client.gather(futures)
        except BaseException:
            self.client.cancel(futures)
            raise

    def map_calls(self, fn: Callable, calls: Sequence[tuple], desc: str = "") -> list:
        """``fn(*call)`` for every call, as tasks; results in order."""
        import dask

        return self.compute([dask.delayed(_in_share, pure=False)(fn, *c) for c in calls], desc)

    def memory(self) -> int:
        """The workers' memory limits added up, bytes (0 where a worker has none)."""
        info = self.client.scheduler_info(n_workers=-1)["workers"].values()
        return int(sum(w.get("memory_limit") or 0 for w in info))

    def row_blocks(self, array_path: Path, rows: int, hold: bool | None = None) -> RowBlocks:
        """The blocks of ``rows`` rows of the Zarr array at ``array_path``, read on the workers with
        ``dask.array.from_zarr``. ``hold``: read once and kept in the workers' memory for every pass over them
        (None: when they take at most ``HOLD_SHARE`` of it), else read again by each pass."""
        import dask.array as da
        import zarr

        # the array opened here (zarr's LocalStore, pickled to the workers, which read the path themselves), in
        # chunks of the block's rows: one read task per block, on the worker that then works on it. A path
        # string would read through fsspec's async wrapper and a rechunk of the store's chunks would move
        # them between workers: 2x slower (bench stats_dask)
        z = zarr.open_array(str(Path(array_path).resolve()), mode="r")
        blocks = list(da.from_zarr(z, chunks=(rows, *z.shape[1:])).to_delayed().ravel())
        memory = self.memory()
        if hold is None:
            hold = z.nbytes <= HOLD_SHARE * memory
        if hold:  # an even share of the blocks on each worker (the first share on the first, ...): the tasks of
            # every pass then run where their block is, none waiting for a block to move. A preference, not a
            # rule: the blocks of a worker that dies are read again by another
            workers = sorted(self.client.scheduler_info(n_workers=-1)["workers"])
            share = -(-len(blocks) // len(workers))
            blocks = [held for w, s in zip(workers, range(0, len(blocks), share))
                      for held in self.client.persist(blocks[s : s + share], workers=[w], allow_other_workers=True)]
        if self.progress:
            where = "held in the workers' memory" if hold else "read again by each pass"
            print(f"dask: {len(blocks)} blocks of {rows:,} rows, {where} ({z.nbytes / 1e9:.2f} GB; the workers "
                  f"have {memory / 1e9:.1f} GB)", file=sys.stderr)
        return RowBlocks(self, blocks, rows, hold)


class RowBlocks:
    """Row blocks of an array on a cluster (``Cluster.row_blocks``): functions mapped over them as tasks. Held
    blocks stay in the workers' memory until this object is dropped."""

    def __init__(self, cluster: Cluster, blocks: list, rows: int, held: bool):
        self.cluster, self.blocks, self.rows, self.held = cluster, blocks, rows, held

    def map(self, fn: Callable, args: tuple = (), per_block: Sequence[tuple] | None = None, desc: str = "") -> list:
        """``fn(block, start, *args, *per_block[b])`` for every block, as tasks; results in block order."""
        import dask

        shared = [self.cluster.client.scatter(a, broadcast=True, hash=False) if _large(a) else a for a in args]
        tasks = [dask.delayed(_in_share, pure=False)(fn, b, i * self.rows, *shared,
                                                     *(per_block[i] if per_block else ()))
                 for i, b in enumerate(self.blocks)]
        return self.cluster.compute(tasks, desc)


def share_cores() -> None:
    """In a task: numba's threads for this thread (the worker's executor thread) to the worker's share of the
    cores, which ``OMP_NUM_THREADS`` holds on a zspace LocalCluster (numba's own default would take every core in
    every worker process)."""
    want = os.environ.get("OMP_NUM_THREADS")
    if want and want.isdigit():
        numba.set_num_threads(max(1, min(int(want), numba.config.NUMBA_NUM_THREADS)))


def _in_share(fn: Callable, *args):
    """A task: ``fn(*args)`` with numba at the worker's share of the cores."""
    share_cores()
    return fn(*args)


def _show_progress(futures: list, every: float = 60.0) -> None:
    """Until ``futures`` finish: dask's bar (its feed redraws every 0.1 s) when stderr is a terminal, else a
    line every ``every`` seconds and one at the end."""
    from dask.distributed import as_completed
    from dask.distributed import progress as dask_progress

    if sys.stderr.isatty():
        with contextlib.redirect_stdout(sys.stderr):  # dask's bar writes to stdout
            dask_progress(futures, notebook=False)
        print(file=sys.stderr)
        return
    t0 = last = time.monotonic()
    for done, _ in enumerate(as_completed(futures), 1):
        now = time.monotonic()
        if now - last >= every or done == len(futures):
            print(f"dask:   {done}/{len(futures)} done, {now - t0:.0f} s", file=sys.stderr, flush=True)
            last = now


def _large(obj) -> bool:
    """Worth scattering once rather than sending with every task (a fit's d x d matrices, say)."""
    nbytes = getattr(obj, "nbytes", None)
    if nbytes is None and hasattr(obj, "__dict__"):
        nbytes = sum(getattr(v, "nbytes", 0) for v in vars(obj).values())
    return bool(nbytes) and nbytes > 1 << 20


def parse_spec(spec: str) -> tuple[str, int | str]:
    """("local", N) or ("address", ADDRESS) from ``--dask``; a one-line error otherwise."""
    if spec.startswith("local:"):
        try:
            n = int(spec.split(":", 1)[1])
        except ValueError:
            n = 0
        if n < 1:
            raise ValueError(f"--dask local:N takes a positive number of worker processes, got {spec!r}")
        return "local", n
    if "://" not in spec and ":" not in spec:
        raise ValueError(f"--dask takes a scheduler address (tcp://host:8786) or local:N, got {spec!r}")
    host = spec.split("://")[-1].split(":")[0]
    if "://" not in spec and host != "localhost" and difflib.get_close_matches(host, ["local"], cutoff=0.75):
        # "lcoal:2" would otherwise wait 20 s for a scheduler on a host of that name
        raise ValueError(f"--dask {spec!r}: did you mean local:{spec.split(':', 1)[1]}? (a scheduler's address is "
                         f"tcp://host:8786)")
    return "address", spec


@contextlib.contextmanager
def open_cluster(spec: str | None, progress: bool = True) -> Iterator[Cluster | None]:
    """The cluster ``--dask`` names for the duration of a command (None without ``--dask``)."""
    if not spec:
        yield None
        return
    kind, value = parse_spec(spec)
    try:
        from dask.distributed import Client, LocalCluster
    except ImportError:
        raise ValueError(f"--dask needs Dask, which is not installed: {INSTALL}") from None
    if not logger.isEnabledFor(logging.DEBUG):  # its INFO lines (every worker's start and stop) drown ours
        for name in ("distributed", "bokeh", "tornado"):
            logging.getLogger(name).setLevel(logging.WARNING)
    with contextlib.ExitStack() as stack:
        if kind == "local":
            import dask

            # each worker process gets its share of the cores (BLAS, OpenMP and, through share_cores, numba),
            # set before it spawns. The nanny lets a variable already in this process's environment win over its
            # pre-spawn-environ, so the share is put into the environment for the cluster's life (a worker the
            # nanny restarts gets it too); dask's own pre-spawn variables (MALLOC_TRIM_THRESHOLD_) are kept
            threads = str(max(1, (os.cpu_count() or 1) // value))
            env = {"OMP_NUM_THREADS": threads, "OPENBLAS_NUM_THREADS": threads, "MKL_NUM_THREADS": threads,
                   "OPENBLAS_THREAD_TIMEOUT": os.environ.get("OPENBLAS_THREAD_TIMEOUT", "4")}
            spawn = {**dask.config.get("distributed.nanny.pre-spawn-environ", {}), **env}
            stack.enter_context(dask.config.set({"distributed.nanny.pre-spawn-environ": spawn}))
            stack.enter_context(_environ(env))
            # loopback only: a scheduler takes pickled tasks from whoever connects, and its dashboard tells all
            cluster = stack.enter_context(LocalCluster(n_workers=value, threads_per_worker=1, processes=True,
                                                       host="127.0.0.1", dashboard_address="127.0.0.1:0",
                                                       silence_logs=logging.ERROR))
            client = stack.enter_context(Client(cluster))
        else:
            try:
                client = stack.enter_context(Client(value, timeout="20s"))
            except OSError as exc:
                raise ValueError(f"cannot reach the Dask scheduler at {value} ({exc}); start one with "
                                 f"'dask scheduler' and workers with 'dask worker {value}'") from None
        try:
            client.wait_for_workers(1, timeout=WORKER_WAIT_S)
        except TimeoutError:
            raise ValueError(f"the Dask scheduler at {client.scheduler.address} has no workers (waited "
                             f"{WORKER_WAIT_S} s); start some with 'dask worker {client.scheduler.address}'") from None
        c = Cluster(client, progress)
        dash = f"dashboard {client.dashboard_link}" if _has_dashboard() else "no dashboard (pip install bokeh for one)"
        print(f"dask: scheduler {client.scheduler.address}, {c.workers} workers; {dash}", file=sys.stderr)
        yield c


@contextlib.contextmanager
def _environ(values: dict[str, str]) -> Iterator[None]:
    """``values`` in os.environ until the block ends, the previous values restored after."""
    before = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in before.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _has_dashboard() -> bool:
    try:
        import bokeh  # noqa: F401
    except ImportError:
        return False
    return True


def row_block_results(blocks: RowBlocks | None, z, fn: Callable, rows: int, args: tuple = (),
                      per_block: Sequence[tuple] | None = None, progress: bool = False, desc: str = "") -> Iterator:
    """``fn(block, start, *args, *per_block[b])`` over the row blocks of ``z``, in block order: in this process
    (the next block read while ``fn`` works) or, given the cluster's ``blocks`` of ``z``, as its tasks."""
    if blocks is None:
        for b, (start, x) in enumerate(iter_blocks(z, rows, progress, desc)):
            yield fn(x, start, *args, *(per_block[b] if per_block else ()))
        return
    yield from blocks.map(fn, args, per_block, desc)
