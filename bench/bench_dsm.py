"""DSM loss forward+backward vs the naive loss (a thin wrapper of ``fastlangevin bench``).

python bench/bench_dsm.py [--device cuda] [any fastlangevin bench flag]    # B=128, 3x64x64; fp32 (+bf16 on CUDA)
"""

import sys

import torch

from fastlangevin.cli import main

dtypes = "fp32,bf16" if torch.cuda.is_available() else "fp32"
sys.exit(main(["bench", "--workloads", "dsm", "--shapes", "128x3x64x64", "--dtypes", dtypes] + sys.argv[1:]))
