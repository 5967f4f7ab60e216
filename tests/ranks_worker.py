"""A rank of a ``launch`` job with a fault planted by the tests (``ZSPACE_PLANT``), then the real worker.

  raise:R:S       rank R raises RuntimeError at its training step S
  encode-raise:R:B  rank R raises after encoding B blocks
  unsynced        batch norm is left per rank (what SyncBatchNorm exists to prevent)
  chunk-rows:N    latent stores get row chunks of N (small stores then have several chunks to share out)
  audit:FILE      every rank but 0 lists the files it opened for writing, renamed or removed into FILE.rank
"""

import os
import sys

import engine.model.encode as encode_module
import engine.model.train as train_module
from engine.model.launch import worker_main

RANK = int(os.environ.get("RANK", 0))


def plant(spec: str) -> None:
    kind, *args = spec.split(":", 1)
    if kind == "raise":
        rank, step = map(int, args[0].split(":"))
        real, count = train_module.train_step, [0]

        def failing(*a, **k):
            count[0] += 1
            if RANK == rank and count[0] == step:
                raise RuntimeError(f"planted failure on rank {rank} at step {step}")
            return real(*a, **k)

        train_module.train_step = failing
    elif kind == "encode-raise":
        rank, blocks = map(int, args[0].split(":"))
        real, count = encode_module.encode_block, [0]

        def failing(*a, **k):
            if RANK == rank and count[0] == blocks:
                raise RuntimeError(f"planted failure on rank {rank} after {blocks} blocks")
            count[0] += 1
            return real(*a, **k)

        encode_module.encode_block = failing
    elif kind == "chunk-rows":
        encode_module.chunk_rows = lambda d: int(args[0])
    elif kind == "unsynced":
        train_module.sync_batchnorm = lambda model, device: model
    elif kind == "audit" and RANK != 0:
        log = open(f"{args[0]}.{RANK}", "w")

        def hook(event, a):
            if event == "open" and isinstance(a[0], (str, bytes, os.PathLike)):
                mode, flags = a[1] or "", a[2] or 0
                if any(c in str(mode) for c in "wax+") or flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
                    log.write(f"open {a[0]}\n")
            elif event in ("os.rename", "os.remove", "os.mkdir", "os.rmdir", "shutil.rmtree"):
                log.write(f"{event} {a[0]}\n")
            log.flush()

        sys.addaudithook(hook)


if __name__ == "__main__":
    for spec in filter(None, os.environ.get("ZSPACE_PLANT", "").split(",")):
        plant(spec)
    sys.exit(worker_main(sys.argv[1:]))
