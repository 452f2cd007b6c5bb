"""The built-in workloads, registered in this order (``--workloads all`` reports them so).
A new workload: one module here defining a :class:`~fastlangevin.benchmarking.engine.Workload`
subclass, plus one line below."""

from ..engine import register_workload
from . import dsm, ode, optim, sampler, step

register_workload(step.LangevinStep())
register_workload(step.Corrector())
register_workload(dsm.DSM())
register_workload(sampler.Sampler())
register_workload(ode.ODE())
register_workload(optim.Optim())
