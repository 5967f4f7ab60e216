"""python -m bench [--small] [--only STAGE,...] [--data CELEBA_ROOT] [--threads N] [--out DIR]"""

from bench.harness import main

if __name__ == "__main__":
    raise SystemExit(main())
