"""CPU step: fastlangevin's fallback vs the textbook and hand-written eager forms (a thin wrapper).

    python bench/cpu_step.py [--sizes 24] [--dtypes fp32] [any fastlangevin bench flag]

Every provider passes the engine's gate first (noise statistics within 6 standard errors at n draws).
"""

import sys

from fastlangevin.cli import main

base = ["bench", "--device", "cpu", "--workloads", "langevin_step", "--sizes", "24", "--dtypes", "fp32"]
sys.exit(main(base + ["--providers", "torch,eager,eager_inplace,eager_buffer"] + sys.argv[1:]))
