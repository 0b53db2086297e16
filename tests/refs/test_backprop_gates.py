"""Tests of the backprop-gates reference (content/refs/backprop-gates/gates.py)."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

REF_DIR = Path(__file__).resolve().parents[2] / "content" / "refs" / "backprop-gates"


def _load():
    spec = importlib.util.spec_from_file_location("backprop_gates", REF_DIR / "gates.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up here
    spec.loader.exec_module(module)
    return module


G = _load()
H = 1e-5  # central-difference step
REL = 1e-6  # required relative agreement of analytic and numerical gradients

inputs = st.floats(min_value=-5.0, max_value=5.0, allow_nan=False, allow_infinity=False)


def central(f, values, i, h=H):
    return G.numerical_grad(f, values, i, h, central=True)


def assert_close_rel(analytic, numerical, rel=REL):
    assert G.relative_error(analytic, numerical) < rel, (analytic, numerical)


# --- every gate: analytic backward vs central differences --------------------


def _gate_grads(gate_cls, *values, top_grad=1.0):
    units = [G.Unit(v) for v in values]
    gate = gate_cls()
    out = gate.forward(*units)
    out.grad = top_grad
    gate.backward()
    return out.value, [u.grad for u in units]


def _gate_value(gate_cls):
    return lambda *vals: gate_cls().forward(*[G.Unit(v) for v in vals]).value


@settings(max_examples=200, deadline=None)
@given(inputs, inputs, st.floats(min_value=-3.0, max_value=3.0))
def test_multiply_gate_gradcheck(x, y, top):
    assume(abs(top) > 1e-2 and abs(x) > 1e-2 and abs(y) > 1e-2)
    value, grads = _gate_grads(G.MultiplyGate, x, y, top_grad=top)
    assert value == x * y
    f = _gate_value(G.MultiplyGate)
    for i, g in enumerate(grads):
        assert_close_rel(g, top * central(f, (x, y), i))


@settings(max_examples=200, deadline=None)
@given(inputs, inputs, st.floats(min_value=-3.0, max_value=3.0))
def test_add_gate_gradcheck(x, y, top):
    assume(abs(top) > 1e-2)
    value, grads = _gate_grads(G.AddGate, x, y, top_grad=top)
    assert value == x + y
    f = _gate_value(G.AddGate)
    for i, g in enumerate(grads):
        assert_close_rel(g, top * central(f, (x, y), i))


@settings(max_examples=200, deadline=None)
@given(inputs, st.floats(min_value=-3.0, max_value=3.0))
def test_sigmoid_gate_gradcheck(t, top):
    assume(abs(top) > 1e-2)
    value, (g,) = _gate_grads(G.SigmoidGate, t, top_grad=top)
    assert value == pytest.approx(1.0 / (1.0 + math.exp(-t)), rel=1e-15)
    assert_close_rel(g, top * central(_gate_value(G.SigmoidGate), (t,), 0))


@settings(max_examples=100, deadline=None)
@given(inputs)
def test_relu_gate_gradcheck(t):
    assume(abs(t) > 1e-3)  # away from the kink
    value, (g,) = _gate_grads(G.ReluGate, t)
    assert value == max(0.0, t)
    num = central(_gate_value(G.ReluGate), (t,), 0)
    assert (g == num == 0.0) if t < 0 else (G.relative_error(g, num) < REL)


def test_gates_accumulate_gradients():
    # a unit feeding two gates collects both contributions: d(x*x)/dx = 2x
    x = G.Unit(3.0)
    gate = G.MultiplyGate()
    out = gate.forward(x, x)
    out.grad = 1.0
    gate.backward()
    assert x.grad == 6.0


# --- the neuron and the chapter-2 models -------------------------------------


def _neuron_grads(values):
    units = [G.Unit(v) for v in values]
    circuit = G.NeuronCircuit()
    circuit.forward(*units)
    circuit.backward(1.0)
    return [u.grad for u in units]


def test_neuron_gradcheck_at_guide_point():
    values = tuple(G.NEURON_INPUTS.values())
    for i, g in enumerate(_neuron_grads(values)):
        assert_close_rel(g, central(G.neuron_value, values, i))


small = st.floats(min_value=-1.5, max_value=1.5, allow_nan=False, allow_infinity=False)


@settings(max_examples=100, deadline=None)
@given(small, small, small, small, small)
def test_neuron_gradcheck_random(a, b, c, x, y):
    values = (a, b, c, x, y)  # |a*x + b*y + c| <= 6: the sigmoid's slope stays > 2e-3
    for i, g in enumerate(_neuron_grads(values)):
        num = central(G.neuron_value, values, i)
        if abs(g) < 1e-4:  # an input near zero: compare absolutely
            assert abs(g - num) < 1e-10
        else:
            assert_close_rel(g, num)


def _param_gradcheck(model, x, y):
    params = model.params()
    for u in params:
        u.grad = 0.0
    model.forward(G.Unit(x), G.Unit(y))
    model.backward(1.0)
    analytic = [u.grad for u in params]
    for u, g in zip(params, analytic, strict=True):
        v0 = u.value
        u.value = v0 + H
        up = G.score(model, x, y)
        u.value = v0 - H
        down = G.score(model, x, y)
        u.value = v0
        num = (up - down) / (2 * H)
        if g == 0.0 and num == 0.0:
            continue
        assert_close_rel(g, num)


@pytest.mark.parametrize("point", G.DATA)
def test_linear_classifier_param_gradients(point):
    _param_gradcheck(G.LinearClassifier(), *point)


@pytest.mark.parametrize("seed", range(5))
def test_two_layer_net_param_gradients(seed):
    net = G.TwoLayerNet(np.random.default_rng(seed), 0.5)
    for x, y in G.DATA:
        p = {k: u.value for k, u in net.p.items()}
        pre = [p[f"a{i}"] * x + p[f"b{i}"] * y + p[f"c{i}"] for i in (1, 2, 3)]
        if min(abs(v) for v in pre) < 1e-3:
            continue  # too close to a ReLU kink for finite differences
        _param_gradcheck(net, x, y)


def test_net_training_matches_hand_derived_updates():
    """The gate-built net follows the guide's hand-written backward pass exactly."""
    args = G.Args()
    rng_gates, rng_hand = np.random.default_rng(7), np.random.default_rng(7)
    net = G.TwoLayerNet(rng_gates, args.init_range)
    G.train(net, rng_gates, args)

    w = dict(zip(G.TwoLayerNet.NAMES, rng_hand.uniform(-0.5, 0.5, size=13), strict=True))
    for _ in range(args.n_iters):
        i = int(rng_hand.integers(len(G.DATA)))
        (x, y), label = G.DATA[i], G.LABELS[i]
        n = [max(0.0, w[f"a{k}"] * x + w[f"b{k}"] * y + w[f"c{k}"]) for k in (1, 2, 3)]
        s = w["a4"] * n[0] + w["b4"] * n[1] + w["c4"] * n[2] + w["d4"]
        pull = 1.0 if (label == 1 and s < 1) else (-1.0 if (label == -1 and s > -1) else 0.0)
        d = {"a4": n[0] * pull, "b4": n[1] * pull, "c4": n[2] * pull, "d4": pull}
        for k, top in zip((1, 2, 3), ("a4", "b4", "c4"), strict=True):
            dn = w[top] * pull if n[k - 1] > 0 else 0.0
            d[f"a{k}"], d[f"b{k}"], d[f"c{k}"] = x * dn, y * dn, dn
        for name in ("a1", "b1", "a2", "b2", "a3", "b3", "a4", "b4", "c4"):
            d[name] -= w[name]
        w = {k: w[k] + args.step_size * d[k] for k in w}

    for k, u in net.p.items():
        assert u.value == pytest.approx(w[k], rel=1e-9, abs=1e-12), k


def test_linear_classifier_converges_to_regularized_optimum():
    # With pull -a, -b every step, the expected objective is mean hinge + (a^2 + b^2)/2,
    # whose minimizer misclassifies (1.2, 0.7): accuracy settles at 5/6 for every seed.
    args = G.Args()
    for seed in range(1, 6):
        linear, hist, _, _ = G.train_both(seed, args)
        assert hist[0] == pytest.approx(4 / 6)
        assert hist[args.n_iters] >= 5 / 6 - 1e-12
        assert 0.55 < linear.a.value < 0.7 and abs(linear.b.value) < 0.2 and -0.9 < linear.c.value < -0.65


# --- values the guide prints, to the guide's printed precision ---------------


@pytest.fixture(scope="module")
def ch1():
    args = G.Args()
    m = {}
    m.update(G.single_gate(args, np.random.default_rng(0)))
    m.update(G.nested(args))
    m.update(G.neuron(args))
    m.update(G.svm_loss())
    return m


def test_single_gate_matches_guide(ch1):
    assert ch1["single_gate.output"] == -6.0
    assert round(ch1["single_gate.numerical_grad_x"], 1) == 3.0
    assert round(ch1["single_gate.numerical_grad_y"], 1) == -2.0
    assert (ch1["single_gate.grad_x"], ch1["single_gate.grad_y"]) == (3.0, -2.0)
    for key in ("single_gate.output_after_step", "single_gate.output_after_numerical_step"):
        assert round(ch1[key], 2) == -5.87
        assert round(ch1[key], 4) == -5.8706
    # local search improves on -6 but cannot beat the best corner (-1.99)*(2.99)
    assert -6.0 < ch1["single_gate.local_search.best_output"] <= (-2 + 0.01) * (3 - 0.01)


def test_nested_matches_guide(ch1):
    assert ch1["nested.output"] == -12.0
    assert (ch1["nested.grad_x"], ch1["nested.grad_y"], ch1["nested.grad_z"]) == (-4.0, -4.0, 3.0)
    for k, v in (("x", -4.0), ("y", -4.0), ("z", 3.0)):
        assert round(ch1[f"nested.numerical_grad_{k}"], 4) == v
    # (-2.04 + 4.96) * (-3.97) = -11.5924; the guide prints -11.59
    assert round(ch1["nested.output_after_step"], 2) == -11.59
    assert ch1["nested.output_after_step"] == pytest.approx(-11.5924, abs=1e-12)


def test_neuron_matches_guide(ch1):
    assert round(ch1["neuron.output"], 4) == 0.8808
    printed = {"a": -0.105, "b": 0.315, "c": 0.105, "x": 0.105, "y": 0.210}
    for k, v in printed.items():
        assert round(ch1[f"neuron.grad_{k}"], 3) == v
        assert round(ch1[f"neuron.numerical_grad_{k}"], 3) == v
    # The guide prints 0.8825; the computed value is 0.8825502, which is 0.8825 when
    # truncated (the guide's figure) and 0.8826 when rounded. Check within one unit
    # of the printed last digit.
    assert abs(ch1["neuron.output_after_step"] - 0.8825) < 1e-4
    assert ch1["neuron.output_after_step"] > ch1["neuron.output"]
    assert ch1["neuron.gradcheck_max_rel_error"] < REL


def test_svm_loss_matches_guide(ch1):
    for i, (score, cost) in enumerate(((0.56, 0.44), (0.37, 1.37), (1.1, 0.0))):
        assert round(ch1[f"svm_loss.score_{i}"], 3) == score
        assert round(ch1[f"svm_loss.cost_{i}"], 3) == cost
    assert round(ch1["svm_loss.reg_cost"], 3) == 0.005
    assert round(ch1["svm_loss.cost"], 3) == 1.815


# --- the script as the engine runs it -----------------------------------------


def test_script_writes_every_manifest_metric_and_figure(tmp_path):
    yaml = pytest.importorskip("yaml")
    manifest = yaml.safe_load((REF_DIR / "ref.yml").read_text(encoding="utf-8"))
    assert manifest["entry"] == "gates.py"
    assert set(manifest["profiles"]) == {"quick", "full"}
    env = dict(
        os.environ,
        MPLBACKEND="Agg",
        OPENBLAS_NUM_THREADS="1",
        OMP_NUM_THREADS="1",
        MKL_NUM_THREADS="1",
        PYTHONHASHSEED="0",
    )
    out = tmp_path / "out"
    proc = subprocess.run(
        [
            sys.executable,
            manifest["entry"],
            "--profile",
            "quick",
            "--out",
            str(out),
            "--seed",
            str(manifest["seed"]),
        ],
        cwd=REF_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    # the Korean labels are drawn in a font that has Hangul (matplotlib warns of every missing glyph)
    assert "missing from font" not in proc.stderr, proc.stderr[-2000:]
    metrics = json.loads((out / "metrics.json").read_text())
    missing = set(manifest["metrics"]) - set(metrics)
    assert not missing, sorted(missing)
    assert all(isinstance(v, (int, float)) and math.isfinite(v) for v in metrics.values())
    for stem in manifest["figures"]:
        for ext in ("png", "svg"):
            path = out / f"{stem}.{ext}"
            assert path.is_file() and path.stat().st_size > 1000, path
    # the subprocess agrees with the module in-process on the deterministic values
    args = G.Args()
    expected = {**G.nested(args), **G.neuron(args), **G.svm_loss()}
    for key, value in expected.items():
        if manifest["metrics"][key]["tolerance"] == "exact":
            assert metrics[key] == value, key
