"""python -m bench [--small] [--only STAGE,...] [--data CELEBA_ROOT] [--threads N]"""

import argparse
import logging

from bench.harness import STAGES, run_bench

p = argparse.ArgumentParser(prog="python -m bench", description="time every stage against its baseline")
p.add_argument("--small", action="store_true", help="small sizes, for CI (minutes)")
p.add_argument("--only", default=None, help=f"comma-separated subset of {','.join(STAGES)}")
p.add_argument("--data", default=None, help="CelebA root or image folder (default: ../shared/data/celeba-subset when present)")
p.add_argument("--threads", type=int, default=None, help="threads to pin (default: all cores)")
a = p.parse_args()
logging.basicConfig(level=logging.WARNING)
run_bench(small=a.small, only=a.only.split(",") if a.only else None, data=a.data, threads=a.threads)
