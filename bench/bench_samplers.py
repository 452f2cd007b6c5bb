"""Annealed Langevin steps/s, small MLP score, vs the naive loop (a thin wrapper of ``fastlangevin bench``).

python bench/bench_samplers.py [any fastlangevin bench flag]   # batch 4096 (CUDA) or 256 (CPU); 2-D and 3x32x32
"""

import sys

import torch

from fastlangevin.cli import main

b = 4096 if torch.cuda.is_available() else 256
sys.exit(main(["bench", "--workloads", "sampler", "--shapes", f"{b}x2,{b}x3072", "--dtypes", "fp32"] + sys.argv[1:]))
