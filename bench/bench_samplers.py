"""Annealed Langevin steps/s with a small MLP score vs the naive loop (a thin wrapper of ``fastlangevin bench``).

python bench/bench_samplers.py [--shapes 4096x2,4096x3072] [--device cuda] [any fastlangevin bench flag]
"""

import sys

from fastlangevin.cli import main

sys.exit(main(["bench", "--workloads", "sampler", "--shapes", "256x2,256x3072", "--dtypes", "fp32"] + sys.argv[1:]))
