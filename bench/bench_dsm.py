"""DSM loss forward+backward vs the naive loss (a thin wrapper of ``fastlangevin bench``).

python bench/bench_dsm.py [--shapes 128x3x64x64] [--device cuda] [any fastlangevin bench flag]
"""

import sys

from fastlangevin.cli import main

sys.exit(main(["bench", "--workloads", "dsm", "--shapes", "128x3x64x64", "--dtypes", "fp32"] + sys.argv[1:]))
