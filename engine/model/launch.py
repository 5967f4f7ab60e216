"""``--nproc N``: train or encode on N ranks of this machine, started by torchrun's standalone launcher.

This process writes the call (verb and arguments) to a JSON file in a private
temporary folder and has ``torch.distributed.run`` start N copies of
``python -m engine.model.launch FILE``; each joins the job's process group
(``engine.model.ranks``) and calls ``train`` or ``encode``, exactly as an external
``torchrun ... zspace train`` over several machines would. Rank 0 hands its
result back through the same folder. A rank that fails (an exception, a killed
process) ends the job: torchrun stops the others, and ``RankFailed`` names the
rank and its error.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path

import torch.distributed.run as torchrun
from torch.distributed.elastic.multiprocessing.errors import ChildFailedError, ErrorHandler

from engine.files import write_text_atomic
from engine.model.config import ModelConfig, RankFailed, TrainConfig
from engine.model.encode import encode
from engine.model.ranks import RankError, ranks_from_env, under_torchrun
from engine.model.train import train

logger = logging.getLogger(__name__)

VERBS = ("train", "encode")
EXPECTED = (ValueError, FileNotFoundError, RankError)  # a user's error: its message says it all, no traceback


def train_call(cfg: TrainConfig, model_config: ModelConfig | None, **kwargs) -> dict:
    """The JSON form of ``train(run, cfg, model_config, **kwargs)`` for ``launch``."""
    return {"config": asdict(cfg), "model_config": model_config.to_dict() if model_config else None, **kwargs}


def _call(verb: str, kwargs: dict):
    if verb == "train":
        kwargs = dict(kwargs)
        cfg = TrainConfig.from_dict(kwargs.pop("config"))
        mcfg = kwargs.pop("model_config")
        return train(kwargs.pop("run_dir"), cfg, ModelConfig.from_dict(mcfg) if mcfg else None, **kwargs)
    return encode(**kwargs)


def _threads_per_rank(nproc: int) -> str:
    """CPU threads of each rank: this machine's cores shared out (torchrun would otherwise pin 1 and warn)."""
    return os.environ.get("OMP_NUM_THREADS") or str(max(1, (os.cpu_count() or 1) // nproc))


def launch(verb: str, kwargs: dict, nproc: int, script: str | os.PathLike | None = None, quiet: bool = False):
    """Run ``verb`` (train, encode) with ``kwargs`` on ``nproc`` ranks; rank 0's return value, or ``RankFailed``.

    ``script``: another worker program taking the same JSON file (tests plant faults with it).
    """
    if verb not in VERBS:
        raise ValueError(f"--nproc runs one of {VERBS}, not {verb!r}")
    if under_torchrun():
        raise ValueError("--nproc inside a torchrun job: torchrun already started the ranks; drop --nproc")
    with tempfile.TemporaryDirectory(prefix="zspace-ranks-") as tmp:
        spec = Path(tmp) / "call.json"
        spec.write_text(json.dumps({"verb": verb, "kwargs": kwargs, "quiet": quiet}, default=str))
        program = ["-m", "engine.model.launch"] if script is None else [str(script)]
        args = torchrun.parse_args(["--standalone", "--nnodes=1", f"--nproc-per-node={nproc}", "--max-restarts=0",
                                    *program, str(spec)])
        os.environ["OMP_NUM_THREADS"] = _threads_per_rank(nproc)
        if not logger.isEnabledFor(logging.DEBUG):  # its lines on a failure say less than RankFailed does
            logging.getLogger("torch.distributed.elastic").setLevel(logging.CRITICAL)
        logger.info("%s on %d ranks (torchrun standalone, %s threads each)", verb, nproc, os.environ["OMP_NUM_THREADS"])
        try:
            torchrun.run(args)
        except ChildFailedError as exc:
            raise _rank_failed(verb, exc) from None
        return json.loads((Path(tmp) / "result.json").read_text())


def _message(failure) -> str:
    """What a failed rank said: its error file's message, or how it died."""
    msg = failure.message
    if isinstance(msg, dict):  # the error file ErrorHandler wrote: "Type: message"
        msg = msg.get("message", "")
    for kind in EXPECTED:
        msg = msg.removeprefix(f"{kind.__name__}: ")
    if failure.exitcode < 0 and (not msg or msg.startswith("Signal")):
        return f"killed by signal {-failure.exitcode}" + (f" ({msg.split(' received')[0]})" if msg else "")
    if not msg or msg.startswith("To enable traceback"):
        return f"exited with code {failure.exitcode} and left no error"
    return msg


def _callstack(failure) -> str:
    data = failure.error_file_data.get("message") if isinstance(failure.error_file_data, dict) else None
    return (data.get("extraInfo") or {}).get("py_callstack", "") if isinstance(data, dict) else ""


# what a rank says when another one died under it (gloo, nccl): a consequence, not the cause
PEER_LOST = ("Connection closed by peer", "Connection reset by peer", "remote worker crashing", "remote process exited",
             "NCCL communicator was aborted")


def _root_cause(exc: ChildFailedError):
    """(rank, failure) of the cause: the earliest failure that is not a rank stopped by torchrun (SIGTERM) or one
    that lost its peer; failures carry whole-second timestamps, so a cause and its echo often tie."""
    def echo(f) -> bool:  # a rank stopped by torchrun leaves no error of its own; one that raised does, however it ended
        msg = _message(f)
        return msg.startswith(f"killed by signal {int(signal.SIGTERM)}") or any(m in msg for m in PEER_LOST)

    causes = {r: f for r, f in exc.failures.items() if not echo(f)} or exc.failures
    rank = min(causes, key=lambda r: (causes[r].timestamp, r))
    return rank, causes[rank]


def _rank_failed(verb: str, exc: ChildFailedError) -> RankFailed:
    """One error for the job: the rank that failed first and why (the others stopped because of it, or failed
    with the same message: a user's error every rank met)."""
    first, root = _root_cause(exc)
    messages = {rank: _message(f) for rank, f in sorted(exc.failures.items())}
    code = 2 if root.exitcode == 2 else 1  # 2: a user's error, as in one process
    if len(set(messages.values())) == 1 and len(messages) > 1:
        return RankFailed(f"{messages[first]} (ranks {', '.join(map(str, messages))})", code)
    failed = RankFailed(f"rank {first} failed: {messages[first]}; the {verb} job stopped and every other rank "
                        f"with it", code)
    trace = _callstack(root)
    if trace and not any(f"{kind.__name__}: " in trace.splitlines()[-1] for kind in EXPECTED):
        failed.detail = f"rank {first}: {trace}"  # a bug, not a user's error: the traceback to report
    return failed


def record_failure(exc: BaseException) -> None:
    """Leave ``exc`` where torchrun's agent reads a rank's error (nothing outside torchrun)."""
    if os.environ.get("TORCHELASTIC_ERROR_FILE"):
        ErrorHandler().record_exception(exc)


def worker_main(argv: list[str]) -> int:
    """One rank of a ``launch`` job: read the call, run it, rank 0 writes the result beside the call."""
    spec_path = Path(argv[0])
    spec = json.loads(spec_path.read_text())
    ranks = ranks_from_env()
    quiet = spec.get("quiet") or not ranks.main
    logging.basicConfig(level=logging.WARNING if quiet else logging.INFO, stream=sys.stderr,
                        format=f"%(asctime)s %(levelname)-7s rank {ranks.rank} %(name)s: %(message)s", datefmt="%H:%M:%S")
    for noisy in ("faiss", "numba", "matplotlib", "PIL", "torch"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        result = _call(spec["verb"], spec["kwargs"])
    except BaseException as exc:  # the launcher reports it, once for the job
        record_failure(exc)
        return 2 if isinstance(exc, (ValueError, FileNotFoundError)) else 1
    if ranks.main:
        write_text_atomic(spec_path.with_name("result.json"), json.dumps(result, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(worker_main(sys.argv[1:]))
