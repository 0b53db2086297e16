"""게이트를 통한 역전파 — backprop through gates, one file, top to bottom.

Follows the math of chapters 1 and 2 of Andrej Karpathy's "Hacker's guide to
Neural Networks" (http://karpathy.github.io/neuralnets/), written afresh in
Python:

Chapter 1 (deterministic except the random local search):
  * a single multiply gate f(x, y) = x * y: random local search, numerical
    gradient, analytic gradient, one step along the gradient;
  * nested gates (x + y) * z: the chain rule through an add and a multiply gate;
  * a single neuron sigmoid(a*x + b*y + c) built from Unit values and gate
    objects, backpropagated, checked numerically, nudged one step.
Chapter 2 (depends on the random stream):
  * a linear classifier a*x + b*y + c trained with the guide's SVM-style "pull";
  * a 2-layer net (three ReLU neurons + one output neuron, 13 parameters)
    trained with the same loop;
  * the "more conventional approach": the SVM cost of a fixed weight vector.

Chapter-2 accuracies depend on the random stream (which data point is picked
each iteration, and the net's initial parameters). They come from numpy's
Generator, not JavaScript's Math.random, so they need not match the numbers
the guide prints; only their behaviour (the linear classifier and the net
learn the six points) is comparable.

What the math gives (seed-independent): the regularization pull (-a, -b at
every step) makes the linear classifier settle near the minimizer of
mean hinge + (a^2 + b^2)/2, about a = 0.62, b = -0.13, c = -0.83, which
misclassifies (1.2, 0.7): its accuracy plateaus at 5/6 for most seeds. The
same pull on the net's nine multiplicative parameters often shrinks the net to
a constant score (accuracy 1/2) within 400 iterations; for other seeds it
learns all six points. Hence the seed sweep.

Accuracy is recorded after k updates for k = 0, 25, 50, ..., 400
(`linear.accuracy.iter_0000` is the untrained model). The guide prints it
right after the update of iterations 0, 25, ..., 375 instead.

Profiles: `quick` and `full` both run everything above for the given seed.
They differ only in the seed sweep: chapter-2 training is repeated for seeds
seed, seed+1, ..., seed+n_seeds-1 (quick: 5, full: 20) and the mean and the
minimum of the final accuracies are reported (`*.seeds.*`). Seed `seed` of
the sweep is the main run itself.

Usage: python gates.py --profile quick|full --out DIR --seed N
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from digest.refs.style import save_figure, use_korean_font  # noqa: E402 - Korean labels, reproducible files


@dataclass
class Args:
    profile: str = "quick"  # "quick" or "full"; they differ only in n_seeds
    out: str = "out"  # folder for metrics.json and figures
    seed: int = 1  # seeds the local search, the data picking and the net's init
    tweak_amount: float = 0.01  # chapter 1: how far the random local search tweaks x and y
    search_trials: int = 100  # chapter 1: random tweaks tried by the local search
    h: float = 1e-4  # the guide's step for forward-difference numerical gradients
    h_check: float = 1e-5  # step for central differences in the gradient check
    step_size: float = 0.01  # step along the gradient, both chapters
    n_iters: int = 400  # chapter 2: training iterations (one random point each)
    eval_every: int = 25  # chapter 2: record training accuracy every this many updates
    init_range: float = 0.5  # chapter 2: the net's parameters start uniform in [-r, r)
    n_seeds: int = 5  # chapter 2: seeds in the accuracy sweep (full profile: 20)


PROFILES = {"quick": {"n_seeds": 5}, "full": {"n_seeds": 20}}


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------
# Units and gates. A Unit is a wire: the value flowing forward and the
# gradient flowing back. Each gate remembers its inputs and its output, so its
# backward can push the output's gradient into its inputs (adding to what is
# there, since a unit may feed more than one gate).
# ---------------------------------------------------------------------------


class Unit:
    def __init__(self, value: float, grad: float = 0.0):
        self.value = float(value)
        self.grad = float(grad)

    def __repr__(self) -> str:
        return f"Unit(value={self.value!r}, grad={self.grad!r})"


class MultiplyGate:
    def forward(self, u0: Unit, u1: Unit) -> Unit:
        self.u0, self.u1 = u0, u1
        self.out = Unit(u0.value * u1.value)
        return self.out

    def backward(self) -> None:
        # d(u0*u1)/du0 = u1 and d(u0*u1)/du1 = u0, times the gradient from above
        self.u0.grad += self.u1.value * self.out.grad
        self.u1.grad += self.u0.value * self.out.grad


class AddGate:
    def forward(self, u0: Unit, u1: Unit) -> Unit:
        self.u0, self.u1 = u0, u1
        self.out = Unit(u0.value + u1.value)
        return self.out

    def backward(self) -> None:
        # an add gate hands its gradient unchanged to both inputs
        self.u0.grad += 1.0 * self.out.grad
        self.u1.grad += 1.0 * self.out.grad


def sigmoid(t: float) -> float:
    return 1.0 / (1.0 + math.exp(-t))


class SigmoidGate:
    def forward(self, u0: Unit) -> Unit:
        self.u0 = u0
        self.out = Unit(sigmoid(u0.value))
        return self.out

    def backward(self) -> None:
        # sigma'(t) = sigma(t) * (1 - sigma(t))
        s = sigmoid(self.u0.value)
        self.u0.grad += s * (1.0 - s) * self.out.grad


class ReluGate:
    def forward(self, u0: Unit) -> Unit:
        self.u0 = u0
        self.out = Unit(max(0.0, u0.value))
        return self.out

    def backward(self) -> None:
        # passes the gradient where the input was positive, blocks it elsewhere
        if self.u0.value > 0.0:
            self.u0.grad += self.out.grad


# ---------------------------------------------------------------------------
# Numerical gradients: nudge one input by h and watch the output.
# ---------------------------------------------------------------------------


def numerical_grad(f, inputs, i: int, h: float, central: bool = False) -> float:
    """d f / d inputs[i]; forward difference as in the guide, or central."""
    up = list(inputs)
    up[i] += h
    if not central:
        return (f(*up) - f(*inputs)) / h
    down = list(inputs)
    down[i] -= h
    return (f(*up) - f(*down)) / (2.0 * h)


def relative_error(analytic: float, numerical: float) -> float:
    scale = max(abs(analytic), abs(numerical))
    return 0.0 if scale == 0.0 else abs(analytic - numerical) / scale


# ---------------------------------------------------------------------------
# Chapter 1a: a single multiply gate, f(x, y) = x * y at x = -2, y = 3.
# Goal of the chapter: make the output larger by changing the inputs a little.
# ---------------------------------------------------------------------------


def multiply(x: float, y: float) -> float:
    return x * y


def single_gate(args: Args, rng: np.random.Generator) -> dict:
    x, y = -2.0, 3.0
    m = {"single_gate.output": multiply(x, y)}

    # Strategy 1: random local search. Try small random tweaks, keep the best.
    best_out, best_x, best_y = -math.inf, x, y
    for _ in range(args.search_trials):
        x_try = x + args.tweak_amount * (rng.random() * 2.0 - 1.0)
        y_try = y + args.tweak_amount * (rng.random() * 2.0 - 1.0)
        out = multiply(x_try, y_try)
        if out > best_out:
            best_out, best_x, best_y = out, x_try, y_try
    m["single_gate.local_search.best_output"] = best_out
    m["single_gate.local_search.best_x"] = best_x
    m["single_gate.local_search.best_y"] = best_y

    # Strategy 2: numerical gradient (forward difference with h = 1e-4).
    num_dx = numerical_grad(multiply, (x, y), 0, args.h)
    num_dy = numerical_grad(multiply, (x, y), 1, args.h)
    m["single_gate.numerical_grad_x"] = num_dx
    m["single_gate.numerical_grad_y"] = num_dy
    m["single_gate.output_after_numerical_step"] = multiply(
        x + args.step_size * num_dx, y + args.step_size * num_dy
    )

    # Strategy 3: analytic gradient. d(xy)/dx = y, d(xy)/dy = x.
    grad_x, grad_y = y, x
    m["single_gate.grad_x"] = grad_x
    m["single_gate.grad_y"] = grad_y
    m["single_gate.output_after_step"] = multiply(x + args.step_size * grad_x, y + args.step_size * grad_y)
    return m


# ---------------------------------------------------------------------------
# Chapter 1b: nested gates, f(x, y, z) = (x + y) * z at x = -2, y = 5, z = -4.
# q = x + y is an add gate, f = q * z a multiply gate; the chain rule links them.
# ---------------------------------------------------------------------------


def nested_circuit(x: float, y: float, z: float) -> float:
    q = x + y
    return q * z


def nested(args: Args) -> dict:
    x, y, z = -2.0, 5.0, -4.0
    q = x + y
    m = {"nested.output": q * z}

    # backward: the multiply gate first, then the add gate
    df_dz = q  # d(q*z)/dz
    df_dq = z  # d(q*z)/dq
    dq_dx = dq_dy = 1.0  # d(x+y)/dx = d(x+y)/dy = 1
    grads = (df_dq * dq_dx, df_dq * dq_dy, df_dz)  # chain rule
    for name, g in zip("xyz", grads, strict=True):
        m[f"nested.grad_{name}"] = g

    for i, name in enumerate("xyz"):
        m[f"nested.numerical_grad_{name}"] = numerical_grad(nested_circuit, (x, y, z), i, args.h)

    x, y, z = (v + args.step_size * g for v, g in zip((x, y, z), grads, strict=True))
    m["nested.output_after_step"] = nested_circuit(x, y, z)
    return m


# ---------------------------------------------------------------------------
# Chapter 1c: a single neuron, sigmoid(a*x + b*y + c), from Units and gates.
# ---------------------------------------------------------------------------


def neuron_value(a: float, b: float, c: float, x: float, y: float) -> float:
    """The same function without units, for numerical checks."""
    return sigmoid(a * x + b * y + c)


class NeuronCircuit:
    """sigmoid(a*x + b*y + c) as five gates."""

    def __init__(self):
        self.mul_ax, self.mul_by = MultiplyGate(), MultiplyGate()
        self.add_axby, self.add_c = AddGate(), AddGate()
        self.sig = SigmoidGate()

    def forward(self, a: Unit, b: Unit, c: Unit, x: Unit, y: Unit) -> Unit:
        ax = self.mul_ax.forward(a, x)
        by = self.mul_by.forward(b, y)
        axby = self.add_axby.forward(ax, by)
        axbyc = self.add_c.forward(axby, c)
        return self.sig.forward(axbyc)

    def backward(self, top_grad: float = 1.0) -> None:
        self.sig.out.grad = top_grad
        for gate in (self.sig, self.add_c, self.add_axby, self.mul_by, self.mul_ax):
            gate.backward()


NEURON_INPUTS = {"a": 1.0, "b": 2.0, "c": -3.0, "x": -1.0, "y": 3.0}


def neuron(args: Args) -> dict:
    units = {k: Unit(v) for k, v in NEURON_INPUTS.items()}
    circuit = NeuronCircuit()
    out = circuit.forward(*units.values())
    m = {"neuron.output": out.value}

    circuit.backward(1.0)
    for k, u in units.items():
        m[f"neuron.grad_{k}"] = u.grad

    # numerical check: the guide's forward difference, and a central one
    values = tuple(NEURON_INPUTS.values())
    worst = 0.0
    for i, (k, u) in enumerate(units.items()):
        m[f"neuron.numerical_grad_{k}"] = numerical_grad(neuron_value, values, i, args.h)
        central = numerical_grad(neuron_value, values, i, args.h_check, central=True)
        worst = max(worst, relative_error(u.grad, central))
    m["neuron.gradcheck_max_rel_error"] = worst

    # one step on all five inputs along their gradients
    for u in units.values():
        u.value += args.step_size * u.grad
    m["neuron.output_after_step"] = circuit.forward(*units.values()).value
    return m


# ---------------------------------------------------------------------------
# Chapter 2: binary classification of six 2-D points.
# ---------------------------------------------------------------------------

DATA = [(1.2, 0.7), (-0.3, -0.5), (3.0, 0.1), (-0.1, -1.0), (-1.0, 1.1), (2.1, -3.0)]
LABELS = [1, -1, 1, -1, -1, 1]


class WeightedSum:
    """w1*x1 + ... + wn*xn + bias, as n multiply gates and n add gates."""

    def __init__(self, n: int):
        self.muls = [MultiplyGate() for _ in range(n)]
        self.adds = [AddGate() for _ in range(n)]

    def forward(self, weights: list[Unit], inputs: list[Unit], bias: Unit) -> Unit:
        total = bias
        for mul, add, w, x in zip(self.muls, self.adds, weights, inputs, strict=True):
            total = add.forward(total, mul.forward(w, x))
        return total

    def backward(self) -> None:
        for mul, add in zip(reversed(self.muls), reversed(self.adds), strict=True):
            add.backward()
            mul.backward()


class LinearClassifier:
    """score = a*x + b*y + c; predicts +1 where the score is positive."""

    def __init__(self):
        self.a, self.b, self.c = Unit(1.0), Unit(-2.0), Unit(-1.0)
        self.sum = WeightedSum(2)

    def params(self) -> list[Unit]:
        return [self.a, self.b, self.c]

    def multiplicative(self) -> list[Unit]:
        return [self.a, self.b]  # regularized; the bias c is not

    def forward(self, x: Unit, y: Unit) -> Unit:
        self.out = self.sum.forward([self.a, self.b], [x, y], self.c)
        return self.out

    def backward(self, pull: float) -> None:
        self.out.grad = pull
        self.sum.backward()


class TwoLayerNet:
    """Three ReLU neurons on (x, y), then a weighted sum of them: 13 parameters.

    hidden i: n_i = max(0, a_i*x + b_i*y + c_i), i = 1..3
    score:    a4*n1 + b4*n2 + c4*n3 + d4
    """

    NAMES = ["a1", "b1", "c1", "a2", "b2", "c2", "a3", "b3", "c3", "a4", "b4", "c4", "d4"]
    BIASES = ("c1", "c2", "c3", "d4")  # not regularized

    def __init__(self, rng: np.random.Generator, init_range: float):
        draws = rng.uniform(-init_range, init_range, size=len(self.NAMES))
        self.p = {name: Unit(v) for name, v in zip(self.NAMES, draws, strict=True)}
        self.hidden = [(WeightedSum(2), ReluGate()) for _ in range(3)]
        self.top = WeightedSum(3)

    def params(self) -> list[Unit]:
        return list(self.p.values())

    def multiplicative(self) -> list[Unit]:
        return [u for name, u in self.p.items() if name not in self.BIASES]

    def forward(self, x: Unit, y: Unit) -> Unit:
        p = self.p
        ns = []
        for i, (lin, relu) in enumerate(self.hidden, start=1):
            pre = lin.forward([p[f"a{i}"], p[f"b{i}"]], [x, y], p[f"c{i}"])
            ns.append(relu.forward(pre))
        self.out = self.top.forward([p["a4"], p["b4"], p["c4"]], ns, p["d4"])
        return self.out

    def backward(self, pull: float) -> None:
        self.out.grad = pull
        self.top.backward()
        for lin, relu in reversed(self.hidden):
            relu.backward()
            lin.backward()


def score(model, x: float, y: float) -> float:
    return model.forward(Unit(x), Unit(y)).value


def accuracy(model) -> float:
    correct = sum(
        (1 if score(model, x, y) > 0 else -1) == label for (x, y), label in zip(DATA, LABELS, strict=True)
    )
    return correct / len(DATA)


def learn_from(model, x: float, y: float, label: int, step_size: float) -> None:
    """One SVM-style update on one example."""
    s = model.forward(Unit(x), Unit(y)).value
    # the pull on the score: up for a +1 example scoring below 1, down for a -1
    # example scoring above -1, nothing for examples already on the right side
    pull = 0.0
    if label == 1 and s < 1:
        pull = 1.0
    if label == -1 and s > -1:
        pull = -1.0
    for u in model.params():
        u.grad = 0.0
    model.backward(pull)
    for u in model.multiplicative():
        u.grad += -u.value  # regularization: tug multiplicative parameters toward zero
    for u in model.params():
        u.value += step_size * u.grad


def train(model, rng: np.random.Generator, args: Args) -> dict[int, float]:
    """Returns training accuracy after k updates, k = 0, eval_every, ..., n_iters."""
    history = {0: accuracy(model)}
    for it in range(1, args.n_iters + 1):
        i = int(rng.integers(len(DATA)))
        learn_from(model, *DATA[i], LABELS[i], args.step_size)
        if it % args.eval_every == 0:
            history[it] = accuracy(model)
    return history


def make_rngs(seed: int) -> dict[str, np.random.Generator]:
    """Independent streams per use, so one part's draws do not shift another's."""
    children = np.random.SeedSequence(seed).spawn(3)
    return {
        name: np.random.default_rng(s) for name, s in zip(["search", "linear", "net"], children, strict=True)
    }


def train_both(seed: int, args: Args):
    rngs = make_rngs(seed)
    linear = LinearClassifier()
    lin_hist = train(linear, rngs["linear"], args)
    net = TwoLayerNet(rngs["net"], args.init_range)
    net_hist = train(net, rngs["net"], args)
    return linear, lin_hist, net, net_hist


# ---------------------------------------------------------------------------
# Chapter 2, "a more conventional approach": the SVM cost of fixed weights.
# ---------------------------------------------------------------------------


def svm_loss() -> dict:
    X = [[1.2, 0.7], [-0.3, 0.5], [3.0, 2.5]]
    y = [1, -1, 1]
    w = [0.1, 0.2, 0.3]  # the last is the bias
    alpha = 0.1  # regularization strength
    m = {}
    total = 0.0
    for i, (xi, yi) in enumerate(zip(X, y, strict=True)):
        s = w[0] * xi[0] + w[1] * xi[1] + w[2]
        cost_i = max(0.0, -yi * s + 1.0)
        m[f"svm_loss.score_{i}"] = s
        m[f"svm_loss.cost_{i}"] = cost_i
        total += cost_i
    reg = alpha * (w[0] * w[0] + w[1] * w[1])
    m["svm_loss.reg_cost"] = reg
    m["svm_loss.cost"] = total + reg
    return m


# ---------------------------------------------------------------------------
# Figures
# ---------------------------------------------------------------------------


def plot_boundary(model, title: str, out: Path, stem: str) -> None:
    xs = np.linspace(-2.0, 4.0, 121)
    ys = np.linspace(-4.0, 2.5, 131)
    scores = np.array([[score(model, x, y) for x in xs] for y in ys])
    big = max(1.0, float(np.abs(scores).max())) + 1.0
    fig, ax = plt.subplots(figsize=(5, 4.5))
    # filled by the sign of the score; the boundary (score 0) solid, the margins (score +-1) dashed
    ax.contourf(xs, ys, scores, levels=[-big, 0.0, big], colors=["#f4c7c3", "#c6dbef"])
    ax.contour(xs, ys, scores, levels=[0.0], colors="k", linewidths=1.0)
    ax.contour(xs, ys, scores, levels=[-1.0, 1.0], colors="k", linewidths=0.6, linestyles="dashed")
    for label, marker, color in ((1, "o", "#2166ac"), (-1, "s", "#b2182b")):
        pts = np.array([p for p, lab in zip(DATA, LABELS, strict=True) if lab == label])
        style = dict(marker=marker, s=60, c=color, edgecolors="k", zorder=3)
        ax.scatter(pts[:, 0], pts[:, 1], label=f"라벨 {label:+d}", **style)
    ax.set_xlabel("x")
    ax.set_ylabel("y")
    subtitle = "파란 영역: 점수 > 0, 점선: 점수 = ±1"
    ax.set_title(f"{title}: 정확도 {accuracy(model):.3f}\n({subtitle})", fontsize=10)
    ax.legend(loc="lower left", fontsize=8)
    fig.tight_layout()
    save_figure(fig, out, stem)


def plot_accuracy(lin_hist: dict, net_hist: dict, out: Path) -> None:
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(list(lin_hist), list(lin_hist.values()), "o-", label="선형 분류기")
    ax.plot(list(net_hist), list(net_hist.values()), "s-", label="2층 신경망")
    ax.set_xlabel("반복 (업데이트 횟수)")
    ax.set_ylabel("학습 정확도")
    ax.set_ylim(-0.05, 1.05)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    save_figure(fig, out, "accuracy")


# ---------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------


def parse_args() -> Args:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--profile", choices=sorted(PROFILES), default="quick")
    p.add_argument("--out", default="out")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--state", default=None, help="unused: this reference keeps no checkpoints")
    p.add_argument("--resume", action="store_true", help="unused: runs in seconds")
    ns = p.parse_args()
    return Args(profile=ns.profile, out=ns.out, seed=ns.seed, **PROFILES[ns.profile])


def main() -> None:
    args = parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    plt.rcParams["svg.hashsalt"] = "backprop-gates"  # stable SVG ids
    use_korean_font()
    t0 = time.perf_counter()

    # Seeding (see make_rngs): one SeedSequence per seed, split into independent
    # streams for the local search, the linear classifier's picks and the net's
    # init + picks. train_both(seed) below draws from the same streams.
    rngs = make_rngs(args.seed)

    metrics: dict[str, float] = {}
    log(f"[backprop-gates] profile={args.profile} seed={args.seed}")
    metrics.update(single_gate(args, rngs["search"]))
    metrics.update(nested(args))
    metrics.update(neuron(args))
    log(
        f"chapter 1: single gate {metrics['single_gate.output']} -> "
        f"{metrics['single_gate.output_after_step']:.4f}, nested {metrics['nested.output']} -> "
        f"{metrics['nested.output_after_step']:.4f}, neuron {metrics['neuron.output']:.4f} -> "
        f"{metrics['neuron.output_after_step']:.4f}"
    )

    linear, lin_hist, net, net_hist = train_both(args.seed, args)
    for prefix, hist in (("linear", lin_hist), ("net", net_hist)):
        for it, acc in hist.items():
            metrics[f"{prefix}.accuracy.iter_{it:04d}"] = acc
            log(f"{prefix}: training accuracy after {it:3d} updates: {acc:.3f}")
        metrics[f"{prefix}.accuracy_final"] = hist[args.n_iters]
        metrics[f"{prefix}.accuracy_max"] = max(hist.values())
    for name, u in zip("abc", linear.params(), strict=True):
        metrics[f"linear.{name}"] = u.value

    # seed sweep: seed, seed+1, ..., seed+n_seeds-1 (the first is the run above)
    finals = {"linear": [], "net": []}
    for k in range(args.n_seeds):
        _, lh, _, nh = train_both(args.seed + k, args)
        finals["linear"].append(lh[args.n_iters])
        finals["net"].append(nh[args.n_iters])
    for prefix, accs in finals.items():
        metrics[f"{prefix}.seeds.count"] = len(accs)
        metrics[f"{prefix}.seeds.accuracy_final_min"] = min(accs)
        mean = sum(accs) / len(accs)
        metrics[f"{prefix}.seeds.accuracy_final_mean"] = mean
        log(f"{prefix}: final accuracy over {len(accs)} seeds: mean {mean:.3f}, min {min(accs):.3f}")

    metrics.update(svm_loss())

    plot_boundary(linear, "선형 분류기", out, "decision_boundary_linear")
    plot_boundary(net, "ReLU 2층 신경망", out, "decision_boundary_net")
    plot_accuracy(lin_hist, net_hist, out)

    metrics["wall_seconds"] = time.perf_counter() - t0
    metrics = {k: float(v) for k, v in metrics.items()}
    (out / "metrics.json").write_text(json.dumps(metrics, indent=1, sort_keys=True) + "\n")
    log(f"wrote {len(metrics)} metrics and 3 figures to {out} in {metrics['wall_seconds']:.1f}s")


if __name__ == "__main__":
    main()
