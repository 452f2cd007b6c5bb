"""The lean CPU paths of the step are bitwise the general path: the straight path for one-chunk
fp32 states (``_small_cpu_step_``), its hand-off of larger states to the one-thread serial chunk
walk (``_serial_chunks``), the samplers' ``InplaceStepper`` and the walk itself; on random
values and on special values (±0, ±inf, NaN with payloads, subnormals, huge magnitudes)
compared bit for bit, with the same generator draws. A call the straight path declines leaves
x and the generators as they were.
"""

import math
import threading

import pytest
import torch

import fastlangevin as fl
from fastlangevin.fallback import langevin_step as fb
from fastlangevin.fallback.chunks import thread_scratch
from fastlangevin.ops import langevin_step as ops

SHAPES = [(1, 1), (7,), (256, 2), (3, 5, 7), (4096, 2), (1, 32767), (10, 3000)]


def bits(t: torch.Tensor) -> torch.Tensor:
    return t.contiguous().view(torch.int32)


def special_values(n: int, seed: int) -> torch.Tensor:
    """fp32 values with every bit pattern class: random bit patterns (NaNs with payloads,
    infinities, subnormals included), then ±0, ±inf, quiet/signalling NaNs, the smallest
    subnormal and the largest finite value planted at random positions."""
    g = torch.Generator().manual_seed(seed)
    t = torch.randint(-(2**31), 2**31, (n,), generator=g, dtype=torch.int64).to(torch.int32).view(torch.float32)
    planted = torch.tensor(
        [0.0, -0.0, math.inf, -math.inf, 1e-45, -1e-45, 3.4028235e38, -3.4028235e38, 1.0, -1.0], dtype=torch.float32
    )
    planted = torch.cat(
        [planted, torch.tensor([0x7FC00001, 0x7F800001, -0x00400001], dtype=torch.int32).view(torch.float32)]
    )
    idx = torch.randperm(n, generator=g)[: min(n, planted.numel())]
    t[idx] = planted[: idx.numel()]
    return t


def general_only(monkeypatch):
    """Route langevin_step / langevin_step_ through the general path (the straight path declines)."""
    monkeypatch.setattr(ops, "_small_cpu_step_", lambda *args, **kw: False)


def test_seed_view_reads_the_drawn_seed():
    """The straight path reads its seed through a numpy view of the thread's own seed buffer."""
    st = thread_scratch()
    g = torch.Generator().manual_seed(5)
    st.seed.random_(0, 1 << 62, generator=g)
    assert st.seed_np.item() == st.seed.item() and st.seed_np.ctypes.data == st.seed.data_ptr()


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("noise", [None, 0.37])
def test_straight_path_is_the_general_path(shape, noise, monkeypatch):
    x, s = torch.randn(shape), torch.randn(shape)
    for step in (1e-3, 0.01, 0.123456789, 2.5):
        for gen_seed in (None, 11):
            ga = None if gen_seed is None else torch.Generator().manual_seed(gen_seed)
            state = torch.get_rng_state()
            a = x.clone()
            assert ops._small_cpu_step_(a, s, step, noise, None, ga, None, None, 0) is True
            out_a = ops._small_cpu_step_(x, s, step, noise, None, ga, None, None, 0, True)
            assert out_a is not False and out_a.shape == x.shape
            after_a = torch.get_rng_state() if ga is None else ga.get_state()
            with monkeypatch.context() as m:
                general_only(m)
                torch.set_rng_state(state)
                gb = None if gen_seed is None else torch.Generator().manual_seed(gen_seed)
                b = x.clone()
                fl.langevin_step_(b, s, step, noise, generator=gb)
                out_b = fl.langevin_step(x, s, step, noise, generator=gb)
                after_b = torch.get_rng_state() if gb is None else gb.get_state()
            assert torch.equal(bits(a), bits(b)) and torch.equal(bits(out_a), bits(out_b))
            assert torch.equal(after_a, after_b)


@pytest.mark.parametrize("shape", [(256, 2), (4096, 2), (9, 1111)])
def test_straight_path_special_values_bitwise(shape, monkeypatch):
    """NaN payloads included: the straight path runs the general path's torch ops in its order."""
    n = math.prod(shape)
    for seed in range(4):
        x, s = special_values(n, 2 * seed).view(shape), special_values(n, 2 * seed + 1).view(shape)
        for step, noise in ((0.01, None), (1e30, None), (0.5, 1e37)):
            g = torch.Generator().manual_seed(seed)
            a = x.clone()
            assert ops._small_cpu_step_(a, s, step, noise, None, g, None, None, 0) is True
            with monkeypatch.context() as m:
                general_only(m)
                g.manual_seed(seed)
                b = x.clone()
                fl.langevin_step_(b, s, step, noise, generator=g)
            assert torch.equal(bits(a), bits(b))


@pytest.mark.parametrize("offset", [0, 1, 255, 7000])
def test_straight_path_sample_offsets(offset, monkeypatch):
    x, s = torch.randn(64, 9), torch.randn(64, 9)
    g = torch.Generator().manual_seed(2)
    a = x.clone()
    taken = ops._small_cpu_step_(a, s, 0.02, None, None, g, None, None, offset)
    if not taken:  # a state straddling two noise chunks is the general path's
        assert (offset * 9) // 65536 != (offset * 9 + 64 * 9 - 1) // 65536
        return
    with monkeypatch.context() as m:
        general_only(m)
        g.manual_seed(2)
        b = x.clone()
        fl.langevin_step_(b, s, 0.02, generator=g, sample_offset=offset)
    assert torch.equal(bits(a), bits(b))


def _declined_cases():
    x, s = torch.randn(32, 4), torch.randn(32, 4)
    return {
        "fp64 score": (x, s.double(), 0.1, None, None),
        "fp64 x": (x.double(), s.double(), 0.1, None, None),
        "shape": (x, s[:, :2].contiguous(), 0.1, None, None),
        "broadcastable score": (x, s[:1].contiguous(), 0.1, None, None),
        "strided x": (x.t(), s.t(), 0.1, None, None),
        "strided score": (x, s.t().contiguous().t(), 0.1, None, None),
        "tensor step": (x, s, torch.tensor(0.1), None, None),
        "int step": (x, s, 1, None, None),
        "zero step": (x, s, 0.0, None, None),
        "nan step": (x, s, math.nan, None, None),
        "inf step": (x, s, math.inf, None, None),
        "negative noise": (x, s, 0.1, -1.0, None),
        "zero noise": (x, s, 0.1, 0.0, None),
        "clamp": (x, s, 0.1, None, (-1.0, 1.0)),
        "grad": (x.clone().requires_grad_(), s, 0.1, None, None),
        "0-d": (torch.tensor(1.0), torch.tensor(2.0), 0.1, None, None),
        "empty": (torch.empty(0, 3), torch.empty(0, 3), 0.1, None, None),
    }


@pytest.mark.parametrize("name", sorted(_declined_cases()))
def test_declined_calls_leave_everything_untouched(name):
    x, s, step, noise, clamp = _declined_cases()[name]
    x0 = x.detach().clone()
    g = torch.Generator().manual_seed(9)
    state, global_state = g.get_state(), torch.get_rng_state()
    assert ops._small_cpu_step_(x, s, step, noise, clamp, g, None, None, 0) is False
    assert ops._small_cpu_step_(x, s, step, noise, clamp, None, None, None, 0, True) is False
    assert torch.equal(g.get_state(), state) and torch.equal(torch.get_rng_state(), global_state)
    assert torch.equal(bits(x.detach()), bits(x0))


def test_declined_options_and_interception():
    x, s = torch.randn(16, 2), torch.randn(16, 2)
    g = torch.Generator().manual_seed(1)
    state = g.get_state()
    assert ops._small_cpu_step_(x, s, 0.1, None, None, g, None, "philox", 0) is False
    assert ops._small_cpu_step_(x, s, 0.1, None, None, g, ["torch"], None, 0) is False  # unhashable
    assert ops._small_cpu_step_(x, s, 0.1, None, None, g, None, None, -1) is False
    assert ops._small_cpu_step_(x, s, 0.1, None, None, "gen", None, None, 0) is False

    class Mode(torch.overrides.TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            return func(*args, **(kwargs or {}))

    with Mode():
        assert ops._small_cpu_step_(x, s, 0.1, None, None, g, None, None, 0) is False
    assert torch.equal(g.get_state(), state)


def test_straight_path_in_threads():
    """Each thread has its own scratch (buffers, seed view): same draws, same result as serially."""
    x, s = torch.randn(256, 2), torch.randn(256, 2)
    want = []
    for k in range(4):
        a = x.clone()
        fl.langevin_step_(a, s, 0.01, generator=torch.Generator().manual_seed(k))
        want.append(a)
    got = [None] * 4

    def work(k):
        a = x.clone()
        g = torch.Generator().manual_seed(k)
        assert ops._small_cpu_step_(a, s, 0.01, None, None, g, None, None, 0) is True
        got[k] = a

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(torch.equal(bits(a), bits(b)) for a, b in zip(got, want))


@pytest.mark.parametrize("shape", [(256, 2), (4096, 2), (3, 5)])
def test_stepper_is_the_public_step_many_steps(shape):
    """InplaceStepper runs the straight path's operations inline: bitwise langevin_step_ over
    many steps, random step sizes, special values in the state and the score, either generator."""
    from fastlangevin.ops.langevin_step import InplaceStepper

    n = math.prod(shape)
    for use_gen, noise in ((True, None), (False, None), (True, 0.2)):
        x = special_values(n, 1).view(shape)
        a, b = x.clone(), x.clone()
        ga = torch.Generator().manual_seed(4) if use_gen else None
        gb = torch.Generator().manual_seed(4) if use_gen else None
        torch.manual_seed(0)
        state = torch.get_rng_state()
        steps = [float(v) for v in torch.rand(20, generator=torch.Generator().manual_seed(7)) * 0.1 + 1e-4]
        scores = [special_values(n, 100 + j).view(shape) for j in range(20)]
        stepper = InplaceStepper(a, noise, generator=ga)
        assert stepper.plan
        for s, step in zip(scores, steps):
            stepper(s, step)
        after_a = ga.get_state() if use_gen else torch.get_rng_state()
        torch.set_rng_state(state)
        for s, step in zip(scores, steps):
            fl.langevin_step_(b, s, step, noise, generator=gb)
        after_b = gb.get_state() if use_gen else torch.get_rng_state()
        assert torch.equal(bits(a), bits(b)) and torch.equal(after_a, after_b)


def _old_serial_walk(x, score, out, seed, a, std, elem_offset, in_place):
    """The chunk walk as it was before its views came from ``split`` (one slice per use)."""
    from fastlangevin._rng import TORCH_RNG_CHUNK, torch_chunk_normal
    from fastlangevin.fallback.chunks import cpu_scratch

    C, n = TORCH_RNG_CHUNK, x.numel()
    gen, buf = cpu_scratch()
    work = torch.empty(C)
    for k in range(elem_offset // C, (elem_offset + n - 1) // C + 1):
        g0, g1 = max(k * C, elem_offset), min((k + 1) * C, elem_offset + n)
        torch_chunk_normal(seed, k, buf, gen, needed=g1 - k * C, std=std)
        i0, i1 = g0 - elem_offset, g1 - elem_offset
        t = torch.mul(score[i0:i1], a, out=work[: i1 - i0])
        o = x[i0:i1].add_(t) if in_place else torch.add(x[i0:i1], t, out=out[i0:i1])
        o.add_(buf[g0 - k * C : g1 - k * C])
    return out


@pytest.mark.parametrize("n,offset", [(1 << 20, 0), (1 << 20, 12345), (3 * 65536 + 17, 65530), (65537, 65535)])
def test_serial_walk_special_values(n, offset):
    """The split-view walk is bitwise the slice-per-use walk, in and out of place."""
    x, s = special_values(n, 3), special_values(n, 4)
    a = fb.scalar_tensor(0.01, torch.float32)
    for in_place in (True, False):
        x1, x2, o1, o2 = x.clone(), x.clone(), torch.empty(n), torch.empty(n)
        fb._serial_chunks(x1, s, x1 if in_place else o1, 99, a, 0.3, offset, in_place)
        _old_serial_walk(x2, s, x2 if in_place else o2, 99, a, 0.3, offset, in_place)
        r1, r2 = (x1, x2) if in_place else (o1, o2)
        assert torch.equal(bits(r1), bits(r2))
        if not in_place:
            assert torch.equal(bits(x1), bits(x)) and torch.equal(bits(x2), bits(x))


def test_serial_walk_is_the_piece_walk_at_2_20(monkeypatch):
    """At 2**20 (16 chunks, one thread) the public op takes the serial walk and gives bitwise
    what the generic piece walk gives."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        x, s = torch.randn(1 << 20), torch.randn(1 << 20)
        g = torch.Generator().manual_seed(3)
        a = x.clone()
        fl.langevin_step_(a, s, 0.02, generator=g)
        with monkeypatch.context() as m:
            m.setattr(fb, "_serial_cpu", lambda *args: False)
            g.manual_seed(3)
            b = x.clone()
            fl.langevin_step_(b, s, 0.02, generator=g)
        assert torch.equal(bits(a), bits(b))
    finally:
        torch.set_num_threads(threads)


WALK_CASES = [((2, 40000), 0), ((1, 65537), 0), ((300,), 65400), ((64, 1024), 3), ((1024, 1024), 0), ((7, 30001), 2)]


@pytest.mark.parametrize("shape,offset", WALK_CASES)
@pytest.mark.parametrize("noise", [None, 0.25])
def test_walk_hand_off_is_the_general_path(shape, offset, noise, monkeypatch):
    """States beyond one piece (or across two noise chunks) go straight to the serial walk when
    one thread walks them: bitwise the general path, same generator draw, in and out of place."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        x, s = torch.randn(shape), torch.randn(shape)
        g = torch.Generator().manual_seed(8)
        a = x.clone()
        assert ops._small_cpu_step_(a, s, 0.02, noise, None, g, None, None, offset) is True
        new = ops._small_cpu_step_(x, s, 0.02, noise, None, g, None, None, offset, True)
        assert new is not False and new.is_contiguous() and new.shape == x.shape
        after = g.get_state()
        with monkeypatch.context() as m:
            general_only(m)
            g.manual_seed(8)
            b = x.clone()
            fl.langevin_step_(b, s, 0.02, noise, generator=g, sample_offset=offset)
            want_new = fl.langevin_step(x, s, 0.02, noise, generator=g, sample_offset=offset)
        assert torch.equal(bits(a), bits(b)) and torch.equal(bits(new), bits(want_new))
        assert torch.equal(g.get_state(), after)
    finally:
        torch.set_num_threads(threads)


def test_walk_hand_off_special_values(monkeypatch):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        n = 3 * 65536 + 5
        x, s = special_values(n, 21).view(1, n), special_values(n, 22).view(1, n)
        g = torch.Generator().manual_seed(1)
        a = x.clone()
        assert ops._small_cpu_step_(a, s, 0.3, None, None, g, None, None, 0) is True
        with monkeypatch.context() as m:
            general_only(m)
            g.manual_seed(1)
            b = x.clone()
            fl.langevin_step_(b, s, 0.3, generator=g)
        assert torch.equal(bits(a), bits(b))
    finally:
        torch.set_num_threads(threads)


def test_threaded_walk_is_left_to_the_general_path():
    """With two threads a 16-chunk state is walked by the pool: the straight path declines
    before drawing anything, and the public op still gives the one-thread result."""
    threads = torch.get_num_threads()
    try:
        x, s = torch.randn(1 << 20), torch.randn(1 << 20)
        torch.set_num_threads(1)
        g = torch.Generator().manual_seed(6)
        one = x.clone()
        fl.langevin_step_(one, s, 0.01, generator=g)
        torch.set_num_threads(2)
        if torch.get_num_threads() < 2:
            pytest.skip("one thread only")
        g.manual_seed(6)
        state = g.get_state()
        a = x.clone()
        assert ops._small_cpu_step_(a, s, 0.01, None, None, g, None, None, 0) is False
        assert torch.equal(g.get_state(), state) and torch.equal(bits(a), bits(x))
        fl.langevin_step_(a, s, 0.01, generator=g)
        assert torch.equal(bits(a), bits(one))
    finally:
        torch.set_num_threads(threads)


def test_declined_while_compiling_and_after_an_environment_change(monkeypatch):
    """The straight path's one-call compile check reads torch.compiler's flag (what
    is_compiling() returns in eager code); its cached default-argument choice follows
    reload_environment."""
    from fastlangevin import _backend

    x, s = torch.randn(16, 2), torch.randn(16, 2)
    g = torch.Generator().manual_seed(1)
    state = g.get_state()
    with monkeypatch.context() as m:
        m.setattr(torch.compiler, "_is_compiling_flag", True)
        assert torch.compiler.is_compiling()
        assert ops._small_cpu_step_(x, s, 0.1, None, None, g, None, None, 0) is False
        stepper = ops.InplaceStepper(x.clone(), generator=g)
        assert stepper.plan
        calls = []
        m.setattr(ops, "langevin_step_", lambda *args, **kw: calls.append(args))
        stepper(s, 0.1)  # not inline: handed to the public op
        assert len(calls) == 1
    assert torch.equal(g.get_state(), state)
    assert ops._small_cpu_step_(x.clone(), s, 0.1, None, None, g, None, None, 0) is True
    with monkeypatch.context() as m:
        m.setenv(_backend.ENV_VAR, "triton")
        _backend.reload_environment()
        g.manual_seed(1)
        assert ops._small_cpu_step_(x, s, 0.1, None, None, g, None, None, 0) is False
        assert torch.equal(g.get_state(), state)
    _backend.reload_environment()
    assert ops._small_cpu_step_(x.clone(), s, 0.1, None, None, g, None, None, 0) is True


_ADDCDIV_SIZES = (1, 7, 16, 33, 512, 4099, 65539, 1 << 20)
_ADDCDIV_SCALES = (0.01, 3.0, 1e-30, 1e38, 1e-45)


def _addcdiv_mismatches() -> list:
    """(n, a, in place?) where ``addcdiv`` with ``FP32_ONE`` differs bitwise from mul-then-add."""
    bad = []
    for n in _ADDCDIV_SIZES:
        x, s = special_values(n, 5), special_values(n, 6)
        for a in _ADDCDIV_SCALES:
            want = x + torch.mul(s, fb.fp32_scalar(a))
            got_in_place = x.clone().addcdiv_(s, fb.FP32_ONE, value=a)
            got_out = torch.addcdiv(x, s, fb.FP32_ONE, value=a, out=torch.empty(n))
            for label, got in (("in place", got_in_place), ("out", got_out)):
                if not torch.equal(bits(got), bits(want)):
                    bad.append((n, a, label))
    return bad


def test_addcdiv_is_unfused_mul_add():
    """The one-pass ``x + fl(a*s)`` the straight path and the serial walk use is bitwise the
    two-pass form, NaN payloads, infinities, subnormals and overflow included, at sizes that hit
    the vector body and every tail, on this process's CPU capability."""
    assert _addcdiv_mismatches() == []


@pytest.mark.parametrize("capability", ["default", "avx2"])
def test_addcdiv_is_unfused_mul_add_on_other_cpu_capabilities(capability):
    """The same on ATen's other CPU kernels (``ATEN_CPU_CAPABILITY`` picks them at start-up), so the
    identity does not rest on this machine's vector width."""
    import os
    import subprocess
    import sys

    code = "import tests.test_small_path as t; print(t._addcdiv_mismatches())"
    env = dict(os.environ, ATEN_CPU_CAPABILITY=capability)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    r = subprocess.run([sys.executable, "-c", code], env=env, cwd=root, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]", r.stdout
