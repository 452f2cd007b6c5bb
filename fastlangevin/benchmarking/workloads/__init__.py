"""Built-in workloads; importing this package registers them in ``registry.WORKLOADS``
(in this order: the step first, as ``--workloads all`` reports them)."""

from . import step  # noqa: F401  (isort: skip)
from . import corrector  # noqa: F401  (isort: skip)
from . import dsm  # noqa: F401  (isort: skip)
from . import annealed  # noqa: F401  (isort: skip)
