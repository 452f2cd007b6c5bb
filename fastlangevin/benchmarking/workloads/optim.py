"""Workload ``optim``: one SGLD / pSGLD / SGHMC step over the ~100 parameter tensors of a small ResNet.

    SGLD   θ_i ← θ_i − lr g_i + sqrt(2 lr T) z_i                                 for every tensor i
    pSGLD  V_i ← α V_i + (1 − α) g_i²,  G_i = 1 / (eps + sqrt V_i),
           θ_i ← θ_i − lr G_i g_i + sqrt(2 lr T G_i) z_i
    SGHMC  m_i ← (1 − f) m_i − lr g_i + sqrt(2 f lr T) z_i,  θ_i ← θ_i + m_i

``--param method=sgld|psgld|sghmc`` (default sgld; α = 0.99, eps = 1e-5, f = 0.1), ``width=W`` (default
16 CPU: 0.46 M parameters, 64 GPU: 7.4 M), ``model=resnet32|mlp|large`` (:data:`MODELS`). Gradients are
fixed random tensors (the step is timed, not a backward pass); z fresh N(0, I); steps/s. Provider factory:
``make(params, grads, lr, temperature, method) -> step()``. Peer ``posteriors`` (SGLD only): its
``sgld.update(..., inplace=True)`` on the log posterior Σ_i ⟨θ_i, −g_i⟩ (gradient −g; its torch.func
gradient is in the timing, noted in ``extra``). Check: at temperature 0, two steps from fresh state equal
the float64 :mod:`fastlangevin.reference.optim` formulas (to fp32 rounding) on every tensor.
"""

import math

import torch

from ... import optim
from ...reference import optim as ref
from ..engine import CheckFailed, Provider, Workload
from .common import ours

LR = 1e-4
CHECK_STEPS = 2  # the second step reads the state the first one wrote
ALPHA, FRICTION = 0.99, 0.1  # the eager loops' pSGLD α and SGHMC f: fastlangevin.optim's defaults


def resnet_shapes(width: int = 16, blocks_per_stage: int = 5, classes: int = 10) -> list[tuple[int, ...]]:
    """Parameter shapes of a CIFAR ResNet (6 · blocks_per_stage + 2 layers) in model order."""
    shapes: list[tuple[int, ...]] = [(width, 3, 3, 3), (width,), (width,)]
    c_in = width
    for stage in range(3):
        c = width * 2**stage
        for _ in range(blocks_per_stage):
            shapes += [(c, c_in, 3, 3), (c,), (c,), (c, c, 3, 3), (c,), (c,)]
            shapes += [(c, c_in, 1, 1), (c,), (c,)] if c_in != c else []
            c_in = c
    return shapes + [(classes, c_in), (classes,)]


def mlp_shapes(width: int = 16, hidden_layers: int = 4) -> list[tuple[int, ...]]:
    """Weight and bias shapes of a 1-D regression MLP with ``hidden_layers`` layers of 16·width units."""
    h = 16 * width
    return [(h, 1), (h,)] + [(h, h), (h,)] * (hidden_layers - 1) + [(1, h), (1,)]


def _tensors(shapes, device, dtype, seed):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(s, generator=g) * 0.1).to(device=device, dtype=dtype) for s in shapes]


def _eager(params, grads, lr, temperature, method):
    """The per-parameter loop as usually written, in place (pSGLD α = 0.99, eps = 1e-5; SGHMC f = 0.1)."""
    state = [torch.zeros_like(p) for p in params]  # pSGLD's V, SGHMC's m
    b = math.sqrt(2 * (FRICTION if method == "sghmc" else 1.0) * lr * temperature)  # sqrt(2 f lr T), SGLD f = 1
    for p, g in zip(params, grads):
        p.grad = g  # read back each step, as a loop over model.parameters() (or an optimizer) must

    def step():
        for p, v in zip(params, state):
            g = p.grad
            if method == "sgld":
                p.add_(g, alpha=-lr)
                if b:
                    p.add_(torch.randn_like(p), alpha=b)
            elif method == "psgld":
                v.mul_(ALPHA).addcmul_(g, g, value=1 - ALPHA)
                precond = v.sqrt().add_(1e-5).reciprocal_()
                p.addcmul_(precond, g, value=-lr)
                p.add_(torch.randn_like(p) * precond.mul_(2 * lr * temperature).sqrt_())
            else:
                v.mul_(1 - FRICTION).add_(g, alpha=-lr).add_(torch.randn_like(p), alpha=b)
                p.add_(v)

    return torch.no_grad()(step)


#: --param model= -> shapes for a width: CIFAR ResNet-32 (101 tensors), a 1-D MLP (10), one 2**16·w tensor
MODELS = {"resnet32": resnet_shapes, "mlp": mlp_shapes, "large": lambda width: [(width << 16,)]}
#: method -> (fastlangevin.optim class, reference step(θ, g, state) -> (θ, state))
METHODS = {
    "sgld": ("SGLD", lambda theta, g, state: (ref.sgld_step(theta, g, LR), state)),
    "psgld": ("pSGLD", lambda theta, g, state: ref.psgld_step(theta, g, state, LR)),
    "sghmc": ("SGHMC", lambda theta, g, state: ref.sghmc_step(theta, g, state, LR)),
}


def _fastlangevin(params, grads, lr, temperature, method, backend):
    for p, g in zip(params, grads):
        p.grad = g  # read back each step, as a loop over model.parameters() (or an optimizer) must
    return getattr(optim, METHODS[method][0])(params, lr=lr, temperature=temperature, seed=0, backend=backend).step


def _posteriors(params, grads, lr, temperature, method):
    import posteriors

    neg = {str(i): -g for i, g in enumerate(grads)}  # posteriors ascends log p = −U, whose gradient is −g

    def log_post(ps, batch):
        return sum((ps[k] * neg[k]).sum() for k in ps), torch.tensor([])

    transform = posteriors.sgmcmc.sgld.build(log_post, lr=lr, temperature=temperature)
    state = transform.init({str(i): p for i, p in enumerate(params)})
    step = lambda: transform.update(state, None, inplace=True)  # noqa: E731
    step.params = [state.params[str(i)] for i in range(len(params))]
    return step


def _posteriors_unavailable(case, opts):
    if case.param("method") != "sgld":
        return f"posteriors is compared on SGLD only (method={case.param('method')})"
    try:
        import posteriors  # noqa: F401
    except Exception as exc:
        return f"posteriors does not import ({type(exc).__name__}: {exc})"
    return None


class Optim(Workload):
    name = "optim"
    description = "SGLD/pSGLD/SGHMC step over the 101 tensors of a CIFAR ResNet-32 (or --param model=); steps/s"
    bytes_note = "optim: not a bandwidth figure, throughput is optimizer steps/s"
    dtypes = ("fp32",)
    modes = ("inplace",)
    unit = "steps/s"
    provider_list = (
        Provider("eager_loop", "eager per-parameter loop: add_ / addcmul_ / randn_like per tensor", _eager),
        *reversed(ours(_fastlangevin, "optim (--param method)", 1 << 16)),  # torch (foreach), then triton
        Provider("posteriors", "posteriors.sgmcmc.sgld (per leaf)", _posteriors, "peer", _posteriors_unavailable),
    )

    def cases(self, opts):
        params = dict(opts.params)
        params.setdefault("width", 64 if opts.device.type == "cuda" else 16)
        if params.setdefault("method", "sgld") not in METHODS:
            raise ValueError(f"--param method={params['method']!r}: choose {', '.join(METHODS)}")
        if params.get("model", "resnet32") not in MODELS:  # (not defaulted: the default case key stays as it was)
            raise ValueError(f"--param model={params['model']!r}: choose {', '.join(MODELS)}")
        numel = sum(math.prod(s) for s in self._shapes(params))
        return super().cases(opts.replace(shapes=[(numel,)], params=tuple(params.items())))

    @staticmethod
    def _shapes(params) -> list[tuple[int, ...]]:
        return MODELS[params.get("model", "resnet32")](int(params["width"]))

    def setup(self, case, opts):
        return {"shapes": self._shapes(dict(case.params))}

    def check(self, provider, case, inp, opts):
        method = case.param("method")
        params, grads = (_tensors(inp["shapes"], case.device, case.dtype, opts.seed + k) for k in (1, 2))
        want = []
        for p, g in zip(params, grads):
            theta, state = p.double(), torch.zeros_like(p, dtype=torch.float64)
            for _ in range(CHECK_STEPS):
                theta, state = METHODS[method][1](theta, g.double(), state)
            want.append(theta.to(case.dtype))
        step = provider.make(params, grads, LR, 0.0, method)
        for _ in range(CHECK_STEPS):
            step()
        for i, (a, b) in enumerate(zip(getattr(step, "params", params), want)):
            try:
                torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
            except AssertionError as exc:
                what = f"{method} at temperature 0, tensor {i} {tuple(b.shape)}"
                raise CheckFailed(f"{what}: not the reference after {CHECK_STEPS} steps ({exc})") from None
        return {"n_tensors": len(want), "steps_checked": CHECK_STEPS}

    def timed(self, provider, case, inp, opts):
        params, grads = (_tensors(inp["shapes"], case.device, case.dtype, opts.seed + k) for k in (3, 4))
        extra = {"n_tensors": len(params)}
        if provider.kind == "peer":
            extra["note"] = "includes posteriors' torch.func gradient of a linear log posterior"
        return provider.make(params, grads, LR, 1.0, case.param("method")), extra
