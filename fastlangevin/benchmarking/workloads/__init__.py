"""Built-in workloads; importing this package registers them in ``registry.WORKLOADS``."""

from . import step  # noqa: F401
