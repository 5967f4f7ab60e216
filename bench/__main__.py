"""python -m bench [--small] [--only STAGE,...] [--data CELEBA_ROOT] [--threads N] [--out DIR]"""

import os

os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")  # before numpy loads, as the zspace command does (cli.py)

from bench.harness import main  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(main())
