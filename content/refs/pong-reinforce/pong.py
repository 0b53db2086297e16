"""Pong from pixels: Karpathy's policy gradient (2016-05-31), reproduced faithfully but faster.

The algorithm is the one of "Deep Reinforcement Learning: Pong from Pixels"; every default of
the algorithm below is the original's (the speed options after it are this file's):

* Preprocessing: crop rows 35:195 of the RGB frame, keep every 2nd row and column of
  channel 0, erase the background values 144 and 109, set every other non-zero to 1:
  80x80 = 6400 binary pixels.  The policy sees the difference of the current and the
  previous preprocessed frame; on the first step of an episode there is no previous frame
  and it sees zeros (so h = 0 and p = 0.5).
* Policy: two layers, no biases.  W1 (200x6400) ~ randn/sqrt(6400), W2 (200) ~ randn/sqrt(200);
  h = relu(W1 x), p(UP) = sigmoid(W2 . h).  Action UP (2) when uniform < p, else DOWN (3).
* Learning: REINFORCE.  d log p / d logit = y - p (y = 1 for UP).  Returns are discounted
  with gamma 0.99 and the running sum restarts at every non-zero reward (a point ends a
  rally).  Returns are standardized over each finished episode (the original's per-episode
  stack; `advantage_norm="batch"` standardizes over the 10 episodes of an update instead).
  Gradients accumulate over 10 finished episodes, then one RMSProp step of gradient ascent
  (decay 0.99, lr 1e-4, eps 1e-5).  Running reward: the first episode's score, then
  0.99 * running + 0.01 * score.

Environment: gymnasium + ale-py, ``ALE/Pong-v5`` with ``frameskip=(2, 5)`` (2, 3 or 4 frames,
sampled per step), ``repeat_action_probability=0.25`` (sticky actions), the minimal action
set and RGB observations: the settings of the original ``Pong-v0``.  In the minimal set
action 2 is RIGHT and 3 is LEFT, which move the agent's (right-hand, green) paddle up and
down; `check_actions` verifies this on the emulator.  v5 itself truncates an episode
after 108,000 frames; `max_episode_steps` can cap episodes shorter (the quick profile does,
to stay fast: its "episodes" are then mostly cut-off rallies, not games).

Deviations for speed, each an `Args` option whose effect bench/pong.py measures:

* `num_envs` environments (1 = the original) run in `num_workers` processes; a worker
  preprocesses its frames and sends only the non-zero pixels of the difference frame.
  The main process steps the environments in lockstep "rounds" (every env one step per
  round) and computes the policy for a few envs at a time while the workers step others.
  Updates are applied at the end of a round, so a run depends on `seed` and `num_envs`
  only, not on how the envs are spread over workers.
* Difference frames are sparse (about 20 of 6400 pixels change), so the forward pass sums
  the W1 columns of the changed pixels, and the backward pass scatters into those columns
  only; episodes are stored as pixel indices and signs, not dense 6400-float rows.
* With several envs an episode can straddle an update.  Each step stores its hidden
  activations h and the number of the weights that acted; at the end of the episode the
  backward pass uses the W2 of that version.  So every step contributes exactly the
  gradient of log pi(a|x) of the weights that chose the action (as in the original), applied
  to the current weights (the lag is the deviation).
* `dtype` float32 halves memory traffic (float64 is the original and the default).
* `--faithful` runs the original loop instead: one env in this process, dense 6400-float
  frames, dense matrix products.

Checkpoints (`--state DIR`) are written at the end of a round (format 1 in ref.yml: code that
reads and continues them the same way may resume them; bump it when that changes): weights, RMSProp caches, the
partly filled gradient buffer, the action RNG state (JSON), counters and the whole learning
curve, as one .npz (no pickle), written to a temporary file and renamed.  The emulators'
state is not saved: on `--resume` the envs restart with fresh seeds derived from the seed
and the update count, and episodes that were in flight are dropped.  So a resumed run
continues exactly from the checkpoint (same weights, caches, gradient buffer, RNG,
counters, curve) and differs from an uninterrupted one only in what the emulators do next.

`--progress` trains nothing: it reads the checkpoint in `--state` and writes the counters, the
learning curve so far, a clip of the checkpoint's policy playing and its first-layer weights,
which the site shows while a long run is unfinished.

Evaluation: `eval_episodes` full games (to 21) against the built-in AI, actions sampled
from the policy as in training, on fixed emulator seeds and a fixed action stream.

Training past the running-reward target (`eval_every` > 0, the full profile since episode
49,440): reaching the target no longer ends the run.  From the update that reached it (the
"target episode"), every `eval_every` episodes the current policy plays `eval_check_games`
games (fixed seeds of their own, so checks differ only by the policy); when such a check wins
at least `target_win_rate` of its games, the policy also plays `eval_final_games` games on the
final evaluation's seeds, and the run stops once one of those wins at least `target_win_rate`.
Each evaluation (episode, update, games, wins, points) is kept in the checkpoint
(`evaluations`, with `target_episode`; a format-1 checkpoint without them loads as one whose run
stopped at the target and has no evaluations yet).  Evaluations change nothing the learning
sees (their own RNGs and emulators; the training envs wait) and their time is not training time.
"""

from __future__ import annotations

import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"  # one BLAS thread per process: the cores belong to the emulators

import argparse
import dataclasses
import json
import multiprocessing as mp
import multiprocessing.connection
import sys
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import ale_py
import gymnasium as gym
import numpy as np

from digest.refs.style import save_figure, use_korean_font  # Korean labels, reproducible files

gym.register_envs(ale_py)


@dataclass
class Args:
    # --- the algorithm; defaults are Karpathy's ---
    hidden: int = 200  # hidden units
    batch_episodes: int = 10  # finished episodes per RMSProp update
    learning_rate: float = 1e-4  # RMSProp step size
    gamma: float = 0.99  # discount of rewards
    decay_rate: float = 0.99  # RMSProp decay of the squared-gradient cache
    rms_eps: float = 1e-5  # RMSProp denominator guard
    advantage_norm: str = "episode"  # standardize returns per "episode" (original) or per "batch"
    # --- deviations for speed; bench/pong.py measures them ---
    num_envs: int = 8  # environments stepped in lockstep; 1 = the original
    num_workers: int = os.cpu_count() or 2  # processes stepping the envs: one per core (0 = in this process)
    env_groups: int = 2  # env groups per worker, so a worker steps one while we think about another
    dtype: str = "float64"  # float type of weights and gradients ("float32" is faster)
    faithful: bool = False  # run the original loop: one env, dense frames, in this process
    # --- episodes ---
    max_episode_steps: int = 0  # cut episodes after this many agent steps (0 = play full games)
    # --- run length ---
    target_running_reward: float = 0.0  # stop at the first update after the running reward exceeds this
    # ...or, with eval_every > 0, train on from there until evaluations win (module docstring)
    eval_every: int = 0  # episodes between check evaluations after the target (0: stop at the target)
    eval_check_games: int = 30  # games of each check evaluation
    eval_final_games: int = 100  # games of the evaluation that can stop the run
    target_win_rate: float = 0.55  # a check at this win rate calls the final evaluation; a final one stops
    # safety stops, far beyond the pace measured here (docs/dev/pong.md: running reward -9.5 at
    # 26,000 episodes and 9 hours on 2 cores), so that they never end the full run short of its target
    max_episodes: int = 200_000
    max_wall_seconds: float = 400_000.0  # training time summed over resumes
    checkpoint_every: int = 10  # updates between checkpoints
    checkpoint_seconds: float = 240.0  # ...or this many seconds, whichever comes first
    log_seconds: float = 60.0  # seconds between progress lines
    # --- evaluation and figures ---
    eval_episodes: int = 20  # full games against the built-in AI after training
    gif_max_frames: int = 600  # frames of the play GIF (one per agent step), up to its end
    gif_tail_frames: int = 20  # frames the GIF goes on after the agent's point: its score changes
    determinism_episodes: int = 10  # episodes of each of the two short runs of the determinism check
    seed: int = 1  # the one seed every random stream derives from (set by --seed)


PROFILES = {
    "quick": dict(max_episodes=30, max_episode_steps=300, eval_episodes=2, gif_max_frames=150,
                  checkpoint_every=1, log_seconds=5.0),
    # trains on past the running reward's target until 100 games win 55 % (the final evaluation is those games)
    "full": dict(eval_every=500, eval_episodes=100),
}

D = 80 * 80  # input pixels
UP, DOWN = 2, 3  # minimal action set: RIGHT, LEFT = agent paddle up, down
ENV_ID = "ALE/Pong-v5"
ENV_KWARGS = dict(frameskip=(2, 5), repeat_action_probability=0.25, full_action_space=False, obs_type="rgb")
ORIGINAL_EPISODES = 8_000  # Karpathy's account of his run's length


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ---------------------------------------------------------------- seeding
# Every random number of a run comes from args.seed through these streams.
def weight_rng(seed: int) -> np.random.Generator:
    return np.random.default_rng([seed, 0])


def action_rng(seed: int) -> np.random.Generator:
    return np.random.default_rng([seed, 1])


def env_seeds(seed: int, generation: int, n: int) -> list[int]:
    """Emulator seeds for envs started at `generation` (the update count when (re)started)."""
    return [int(s) for s in np.random.SeedSequence([seed, 2, generation]).generate_state(n)]


def eval_rngs(seed: int) -> tuple[np.random.Generator, list[int]]:
    """Action RNG and emulator seeds of the evaluation (and the play GIF)."""
    return np.random.default_rng([seed, 3]), env_seeds(seed, 10**9, 256)


def check_rngs(seed: int) -> tuple[np.random.Generator, list[int]]:
    """Action RNG and emulator seeds of the check evaluations during training past the target: the
    same games' seeds at every check, other than the final evaluation's (which a check calls: its
    games must not be those that called it)."""
    return np.random.default_rng([seed, 4]), env_seeds(seed, 10**9 + 1, 256)


# ---------------------------------------------------------------- environment
def make_env() -> gym.Env:
    return gym.make(ENV_ID, **ENV_KWARGS)


# 256-entry table: is this channel-0 value a foreground pixel?  (0 is black; 144 and 109 are
# the two background colours the original erases)
FOREGROUND = np.ones(256, dtype=bool)
FOREGROUND[[0, 109, 144]] = False


def preprocess(frame: np.ndarray) -> np.ndarray:
    """210x160x3 RGB frame -> 6400 booleans (the original's crop, downsample, erase)."""
    return np.take(FOREGROUND, frame[35:195:2, ::2, 0]).ravel()


def preprocess_original(frame: np.ndarray) -> np.ndarray:
    """The original preprocessing spelled out step by step (for the self-checks)."""
    img = frame[35:195].copy()  # the original edits the frame in place; we edit a copy
    img = img[::2, ::2, 0]
    img[img == 144] = 0
    img[img == 109] = 0
    img[img != 0] = 1
    return img.astype(np.float64).ravel()


def frame_change(cur: np.ndarray, prev: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Non-zero entries of cur - prev (booleans) as pixel indices and signs +-1."""
    diff = cur.view(np.int8) - prev.view(np.int8)  # numpy stores a bool as one byte, 0 or 1
    idx = np.flatnonzero(diff)
    return idx.astype(np.int16), diff[idx]


# ---------------------------------------------------------------- policy
def init_weights(rng: np.random.Generator, hidden: int, dtype) -> tuple[np.ndarray, np.ndarray]:
    """Xavier-like init as in the original.  W1 is kept transposed, (6400, hidden), so the
    weights of one pixel are one contiguous row: sparse frames gather and scatter rows."""
    W1 = rng.standard_normal((hidden, D)) / np.sqrt(D)
    W2 = rng.standard_normal(hidden) / np.sqrt(hidden)
    return np.ascontiguousarray(W1.T, dtype=dtype), W2.astype(dtype)


def sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def forward_dense(W1T, W2, x):
    """Original forward pass on a dense frame x (6400,): p(UP) and hidden activations."""
    h = np.maximum(x @ W1T, 0.0)
    return sigmoid(h @ W2), h


def backward_dense(W2, X, H, g):
    """Original backward pass over an episode: X (T, 6400), H (T, hidden), g (T,) =
    advantage * (y - p).  Returns (dW1T, dW2)."""
    dW2 = H.T @ g
    dh = np.outer(g, W2)
    dh[H <= 0] = 0.0  # relu
    return X.T @ dh, dW2


def forward_sparse(W1T, W2, counts, idx, vals):
    """Forward pass for several sparse frames.  Frame i is the `counts[i]` entries of
    (idx, vals) after those of frames < i.  W1 x is the signed sum of the W1 rows of the
    changed pixels.  Each frame is summed on its own (a small matrix-vector product), so
    its result does not depend on which other frames share the call."""
    pre = np.zeros((len(counts), W1T.shape[1]), W1T.dtype)
    signs = vals.astype(W1T.dtype)
    start = 0
    for i, n in enumerate(counts.tolist()):
        if n:
            pre[i] = signs[start:start + n] @ W1T[idx[start:start + n]]
        start += n
    h = np.maximum(pre, 0.0)
    return sigmoid((h * W2).sum(axis=1)), h


SCATTER_CHUNK = 1024  # non-zeros per chunk: the scratch buffer stays in cache


def backward_sparse(W2_rows, H, g, counts, idx, vals, dW1T, dW2):
    """Backward pass over an episode of sparse frames, ADDED into dW1T, dW2.
    W2_rows (T, hidden): the W2 that acted at each step.  dW1 = dh^T X is accumulated
    pixel by pixel: the non-zeros are sorted by pixel and each pixel's signed dh rows summed."""
    g = g.astype(W2_rows.dtype, copy=False)
    dW2 += H.T @ g
    dh = g[:, None] * W2_rows
    dh[H <= 0] = 0.0  # relu
    step = np.repeat(np.arange(len(counts)), counts)  # step of each non-zero
    sign = vals.astype(dh.dtype)
    order = np.argsort(idx, kind="stable")  # group the non-zeros by pixel
    scratch = np.empty((SCATTER_CHUNK, dh.shape[1]), dh.dtype)
    for lo in range(0, len(order), SCATTER_CHUNK):
        o = order[lo:lo + SCATTER_CHUNK]
        pix, rows = idx[o], scratch[:len(o)]
        np.take(dh, step[o], axis=0, out=rows)
        rows *= sign[o, None]
        first = np.flatnonzero(np.r_[True, pix[1:] != pix[:-1]])
        dW1T[pix[first]] += np.add.reduceat(rows, first, axis=0)


def discounted_returns(rewards: np.ndarray, gamma: float) -> np.ndarray:
    """Discounted returns; the sum restarts at each point scored (a Pong-specific reset)."""
    out = np.zeros(len(rewards))
    running = 0.0
    for t in reversed(range(len(rewards))):
        if rewards[t] != 0:
            running = 0.0  # a point ends the rally: later rallies don't credit this one
        running = running * gamma + rewards[t]
        out[t] = running
    return out


def standardize(x: np.ndarray) -> np.ndarray:
    x = x - x.mean()
    sd = x.std()
    return x / sd if sd > 0 else x  # sd = 0 only for cut-off episodes without a point


def rmsprop_ascent(w, cache, g, args: Args) -> None:
    cache *= args.decay_rate
    cache += (1 - args.decay_rate) * g * g
    w += args.learning_rate * g / (np.sqrt(cache) + args.rms_eps)


# ---------------------------------------------------------------- learner state
class Learner:
    """Weights, optimizer, gradient buffer, action RNG, counters and learning curve:
    everything a checkpoint holds."""

    def __init__(self, args: Args):
        self.args = args
        dtype = np.dtype(args.dtype)
        self.W1T, self.W2 = init_weights(weight_rng(args.seed), args.hidden, dtype)
        self.rng = action_rng(args.seed)
        self.cache_W1T, self.cache_W2 = np.zeros_like(self.W1T), np.zeros_like(self.W2)
        self._new_buffers()
        self.episodes = self.updates = self.env_steps = self.in_batch = 0
        self.wall_seconds = 0.0
        self.running_reward: float | None = None
        self.episodes_to_target = -1
        self.target_episode = -1  # episode count at the first update after the target
        self.evaluations: list[dict] = []  # evaluations while training past the target, in order
        self.finished = False
        self.curve = {k: [] for k in ("reward", "running", "length", "wall")}
        self.w2_history = {0: self.W2.copy()}  # W2 of each update number still referenced
        self.ready: list[tuple[np.ndarray, np.ndarray]] = []  # closed batches, applied at round end

    def _new_buffers(self):
        # "episode" norm: grad = sum of advantage-weighted per-step gradients.
        # "batch" norm: grad = sum of return-weighted ones, base = sum of unweighted ones,
        # so the batch-standardized gradient is (grad - mean * base) / std, exactly.
        self.grad_W1T, self.grad_W2 = np.zeros_like(self.W1T), np.zeros_like(self.W2)
        if self.args.advantage_norm == "batch":
            self.base_W1T, self.base_W2 = np.zeros_like(self.W1T), np.zeros_like(self.W2)
        self.ret_sum = self.ret_sq = self.ret_n = 0.0

    def w2_rows(self, versions: np.ndarray) -> np.ndarray:
        uniq, inv = np.unique(versions, return_inverse=True)
        return np.stack([self.w2_history[int(v)] for v in uniq])[inv]

    def finish_episode(self, rewards, dlogp, backward) -> None:
        """An episode ended: add its gradient (backward(g, dW1T, dW2) adds into buffers),
        update the curve, close the batch at the 10th episode."""
        returns = discounted_returns(rewards, self.args.gamma)
        if self.args.advantage_norm == "episode":
            backward(standardize(returns) * dlogp, self.grad_W1T, self.grad_W2)
        elif self.args.advantage_norm == "batch":
            backward(returns * dlogp, self.grad_W1T, self.grad_W2)
            backward(dlogp.astype(float), self.base_W1T, self.base_W2)
            self.ret_sum += returns.sum()
            self.ret_sq += (returns**2).sum()
            self.ret_n += len(returns)
        else:
            raise ValueError(f"advantage_norm must be 'episode' or 'batch', not {self.args.advantage_norm!r}")
        score = float(np.sum(rewards))
        self.episodes += 1
        self.running_reward = score if self.running_reward is None else 0.99 * self.running_reward + 0.01 * score
        if self.episodes_to_target < 0 and self.running_reward > self.args.target_running_reward:
            self.episodes_to_target = self.episodes
        for key, value in zip(self.curve, (score, self.running_reward, len(rewards), self.wall_seconds)):
            self.curve[key].append(value)
        self.in_batch += 1
        if self.in_batch == self.args.batch_episodes:
            self._close_batch()

    def _close_batch(self):
        g1, g2 = self.grad_W1T, self.grad_W2
        if self.args.advantage_norm == "batch":
            mean = self.ret_sum / self.ret_n
            std = np.sqrt(max(self.ret_sq / self.ret_n - mean**2, 0.0)) or 1.0
            g1, g2 = (g1 - mean * self.base_W1T) / std, (g2 - mean * self.base_W2) / std
        self.ready.append((g1, g2))
        self._new_buffers()
        self.in_batch = 0

    def apply_ready(self, in_flight_versions=()) -> int:
        """End of a round: RMSProp steps for the batches closed during it."""
        for g1, g2 in self.ready:
            rmsprop_ascent(self.W1T, self.cache_W1T, g1, self.args)
            rmsprop_ascent(self.W2, self.cache_W2, g2, self.args)
            self.updates += 1
            self.w2_history[self.updates] = self.W2.copy()
        n, self.ready = len(self.ready), []
        oldest = min(in_flight_versions, default=self.updates)
        self.w2_history = {v: w for v, w in self.w2_history.items() if v >= oldest}
        return n

    # -- checkpoints: one .npz, no pickle; written to a temporary file, then renamed
    ARRAYS = ("W1T", "W2", "cache_W1T", "cache_W2", "grad_W1T", "grad_W2", "base_W1T", "base_W2")
    COUNTERS = ("episodes", "updates", "env_steps", "in_batch", "wall_seconds", "running_reward",
                "episodes_to_target", "finished", "ret_sum", "ret_sq", "ret_n")

    def save(self, path: Path) -> None:
        arrays = {k: getattr(self, k) for k in self.ARRAYS if hasattr(self, k)}
        arrays.update({f"curve_{k}": np.asarray(v, dtype=float) for k, v in self.curve.items()})
        meta = {k: getattr(self, k) for k in self.COUNTERS}
        meta["target_episode"], meta["evaluations"] = self.target_episode, self.evaluations
        meta["args"] = dataclasses.asdict(self.args)
        arrays["meta"] = np.array(json.dumps(meta))
        arrays["rng_state"] = np.array(json.dumps(self.rng.bit_generator.state))
        tmp = path.with_name(path.name + ".tmp")
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: Path, args: Args) -> "Learner":
        self = cls(args)
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            # the algorithm's settings must match; speed options (num_envs, workers) may change
            for key in ("hidden", "dtype", "advantage_norm", "batch_episodes", "learning_rate", "gamma",
                        "decay_rate", "rms_eps"):
                if meta["args"][key] != getattr(args, key):
                    raise SystemExit(f"checkpoint has {key}={meta['args'][key]!r}, run asks {getattr(args, key)!r}")
            for k in self.ARRAYS:
                if k in z.files:
                    setattr(self, k, z[k].copy())
            self.curve = {k: z[f"curve_{k}"].tolist() for k in self.curve}
            self.rng.bit_generator.state = json.loads(str(z["rng_state"]))
        for k in self.COUNTERS:
            setattr(self, k, meta[k])
        # added later in format 1: a checkpoint without them was finished exactly at the target
        self.target_episode = meta.get("target_episode", self.episodes if self.finished else -1)
        self.evaluations = [dict(e) for e in meta.get("evaluations", [])]
        self.finished = stop_rule_met(args, self)  # the rule of this run (a profile may train on)
        self.w2_history = {self.updates: self.W2.copy()}
        return self


# ---------------------------------------------------------------- training past the target
def stop_rule_met(args: Args, L: Learner) -> bool:
    """Has the run reached its end?  At the target (eval_every 0), or at a final evaluation that won."""
    if L.target_episode < 0:
        return False
    if args.eval_every <= 0:
        return True
    return any(e["games"] >= args.eval_final_games and e["wins"] / e["games"] >= args.target_win_rate
               for e in L.evaluations)


def next_evaluation(args: Args, L: Learner) -> int:
    """The episode count at which the next check evaluation is due (-1: none is)."""
    if L.target_episode < 0 or args.eval_every <= 0:
        return -1
    last = max([L.target_episode, *(e["episode"] for e in L.evaluations)])
    return L.target_episode + args.eval_every * ((last - L.target_episode) // args.eval_every + 1)


def evaluate_past_target(args: Args, L: Learner, play=None) -> list[dict]:
    """Round end, training past the target: the evaluations due now (a check; a final one when the
    check wins enough), appended to L.evaluations and returned.  `play(n_games, final)` plays the
    policy and returns evaluate()'s numbers (tests give a schedule)."""
    due = next_evaluation(args, L)
    if due < 0 or L.episodes < due or L.finished:
        return []
    if play is None:
        def play(n_games, final):
            return evaluate(args, L.W1T, L.W2, n_games, rngs=None if final else check_rngs(args.seed))
    done = []
    for final, n_games in ((False, args.eval_check_games), (True, args.eval_final_games)):
        t0 = time.perf_counter()
        got = play(n_games, final)
        games = int(got["eval.games"])
        record = {"episode": L.episodes, "update": L.updates, "games": games,
                  "wins": int(round(got["eval.win_rate"] * games)),
                  "points_for": got["eval.points_for_mean"], "points_against": got["eval.points_against_mean"],
                  "final": final, "seconds": round(time.perf_counter() - t0, 1)}
        L.evaluations.append(record)
        done.append(record)
        log(f"evaluation at episode {L.episodes}: {record['wins']} of {games} games won "
            f"({record['points_for']:.1f} vs {record['points_against']:.1f} points){' (final)' if final else ''}")
        if record["wins"] / games < args.target_win_rate:  # (55 / 100 is 0.55; 0.55 * 100 is not 55)
            break
    return done


def evaluation_metrics(L: Learner) -> dict:
    """The evaluations while training past the target, as the engine's metrics (-1: none yet)."""
    checks = [e for e in L.evaluations if not e["final"]]
    finals = [e for e in L.evaluations if e["final"]]
    above = [e["episode"] for e in checks if e["wins"] > 0.5 * e["games"]]
    last = checks[-1] if checks else None
    return {
        "target_episode": L.target_episode,
        "evals.checks": len(checks), "evals.finals": len(finals),
        "evals.last_episode": last["episode"] if last else -1,
        "evals.last_win_rate": last["wins"] / last["games"] if last else -1,
        "evals.first_above_half_episode": above[0] if above else -1,
        "evals.best_final_win_rate": max((e["wins"] / e["games"] for e in finals), default=-1),
    }


# ---------------------------------------------------------------- environments in workers
def unpack(buf: bytes):
    """A worker's message: int32 K, then K rewards (int8), K done flags (int8), K counts
    (int32), then the changed pixels of all K difference frames (int16) and their signs (int8)."""
    k = int(np.frombuffer(buf, np.int32, 1)[0])
    rewards = np.frombuffer(buf, np.int8, k, 4)
    dones = np.frombuffer(buf, np.int8, k, 4 + k)
    counts = np.frombuffer(buf, np.int32, k, 4 + 2 * k)
    n, at = int(counts.sum()), 4 + 6 * k
    return rewards, dones, counts, np.frombuffer(buf, np.int16, n, at), np.frombuffer(buf, np.int8, n, at + 2 * n)


class EnvGroup:
    """A few emulators stepped one after another; answers with packed sparse frames.
    An env that finishes an episode is reset at once: its next frame starts the new one."""

    def __init__(self, seeds, max_steps: int):
        self.envs = [make_env() for _ in seeds]
        self.max_steps = max_steps
        self.prev = np.zeros((len(seeds), D), bool)  # previous preprocessed frame of each env
        self.fresh = np.ones(len(seeds), bool)  # whose next frame is an episode's first
        self.steps = [0] * len(seeds)
        frames = [env.reset(seed=s)[0] for env, s in zip(self.envs, seeds)]
        self.first = self._message([0] * len(seeds), [0] * len(seeds), frames)

    def _message(self, rewards, dones, frames) -> bytes:
        # all frames of the group at once: fewer numpy calls per env step
        cur = np.take(FOREGROUND, np.stack([f[35:195:2, ::2, 0] for f in frames])).reshape(len(frames), D)
        if self.fresh.any():  # an episode's first frame has nothing to differ from: the input is zeros
            self.prev[self.fresh] = cur[self.fresh]
            self.fresh[:] = False
        diff = cur.view(np.int8) - self.prev.view(np.int8)
        self.prev = cur
        flat = np.flatnonzero(diff)
        counts = np.bincount(flat // D, minlength=len(frames)).astype(np.int32)
        return b"".join([np.int32(len(frames)).tobytes(), np.asarray(rewards, np.int8).tobytes(),
                         np.asarray(dones, np.int8).tobytes(), counts.tobytes(),
                         (flat % D).astype(np.int16).tobytes(), diff.ravel()[flat].tobytes()])

    def step(self, actions) -> bytes:
        rewards, dones, frames = [], [], []
        for i, (env, action) in enumerate(zip(self.envs, actions)):
            frame, reward, terminated, truncated, _ = env.step(int(action))
            self.steps[i] += 1
            done = terminated or truncated or self.steps[i] == self.max_steps
            if done:
                frame = env.reset()[0]
                self.fresh[i] = True
                self.steps[i] = 0
            rewards.append(reward)
            dones.append(done)
            frames.append(frame)
        return self._message(rewards, dones, frames)


def worker_main(conn, group_seeds, max_steps: int, inherited=()) -> None:
    # Close the main process's pipe ends this fork inherited (its own and earlier workers'):
    # otherwise, if the main process is killed, each pipe keeps a writer and no worker sees EOF.
    for c in inherited:
        c.close()
    groups = [EnvGroup(seeds, max_steps) for seeds in group_seeds]
    try:
        for g in groups:
            conn.send_bytes(g.first)
        while True:
            for g in groups:
                msg = conn.recv_bytes()
                if not msg:
                    return
                conn.send_bytes(g.step(np.frombuffer(msg, np.uint8)))
    except (EOFError, BrokenPipeError, ConnectionResetError, KeyboardInterrupt):
        return  # the main process is gone


class EnvPool:
    """`len(seeds)` envs split into slots (contiguous env ranges); slot s lives in worker
    s % num_workers, which steps its slots in turn.  The main process handles slots in
    the order their frames arrive (`arrivals`), so no worker waits for a slower one;
    whatever depends on order is done in env order at the end of the round."""

    def __init__(self, seeds, num_workers: int, groups: int, max_steps: int):
        n_slots = min(len(seeds), max(num_workers, 1) * groups)
        self.slots = [s.tolist() for s in np.array_split(np.arange(len(seeds)), n_slots)]
        slot_seeds = [[seeds[e] for e in envs] for envs in self.slots]
        self.workers, self.conns, self.local = [], [], None
        if num_workers == 0:
            self.local = [EnvGroup(ss, max_steps) for ss in slot_seeds]
            self.pending = [g.first for g in self.local]
            return
        ctx = mp.get_context("fork")
        self.num_workers = W = min(num_workers, n_slots)
        self.next_slot = list(range(W))  # the slot whose frames each worker sends next
        for w in range(W):
            here, there = ctx.Pipe()
            p = ctx.Process(target=worker_main, args=(there, slot_seeds[w::W], max_steps, [*self.conns, here]),
                            daemon=True)
            p.start()
            there.close()
            self.workers.append(p)
            self.conns.append(here)

    def arrivals(self, todo: set[int]) -> list[tuple[int, tuple]]:
        """Wait until frames of some slots in `todo` are in; return [(slot, message)]."""
        if self.local is not None:
            s = min(todo)
            return [(s, unpack(self.pending[s]))]
        W = self.num_workers
        waiting = {self.conns[w]: w for w in range(W) if self.next_slot[w] in todo}
        out = []
        for conn in mp.connection.wait(list(waiting)):
            w = waiting[conn]
            s = self.next_slot[w]
            self.next_slot[w] = s + W if s + W < len(self.slots) else w
            out.append((s, unpack(conn.recv_bytes())))
        return out

    def send(self, s: int, actions: np.ndarray) -> None:
        if self.local is not None:
            self.pending[s] = self.local[s].step(actions)
        else:
            self.conns[s % self.num_workers].send_bytes(actions.astype(np.uint8).tobytes())

    def close(self) -> None:
        for c in self.conns:
            try:
                c.send_bytes(b"")
            except OSError:
                pass
        for p in self.workers:
            p.join(timeout=5)
            if p.is_alive():
                p.terminate()
        for c in self.conns:
            c.close()
        self.conns, self.workers = [], []

    def rounds(self, rng_draw):
        """Step every env once per round.  Yields (slot, envs, message, uniforms) as frames
        arrive; the round's uniforms are drawn up front (env order), so the order of
        arrival changes nothing.  The caller sends the slot's actions before the next."""
        while True:
            uniforms = rng_draw()
            todo = set(range(len(self.slots)))
            while todo:
                for s, msg in self.arrivals(todo):
                    todo.discard(s)
                    envs = self.slots[s]
                    yield s, envs, msg, uniforms[envs[0]:envs[-1] + 1]
            yield None, None, None, None  # end of round


class EpisodeBuffer:
    """One env's episode in flight, stored sparse."""

    def __init__(self):
        self.idx, self.vals, self.h, self.dlogp, self.version, self.rewards = [], [], [], [], [], []

    def add(self, idx, vals, h, dlogp, version):
        self.idx.append(idx)
        self.vals.append(vals)
        self.h.append(h)
        self.dlogp.append(dlogp)
        self.version.append(version)

    def finish(self, L: Learner) -> None:
        counts = np.array([len(i) for i in self.idx])
        idx, vals = np.concatenate(self.idx), np.concatenate(self.vals)
        H, W2_rows = np.array(self.h), L.w2_rows(np.array(self.version))
        # each step's gradient goes through the W2 of the weights that chose its action (W2_rows)
        L.finish_episode(np.array(self.rewards, float), np.array(self.dlogp),
                         lambda g, dW1T, dW2: backward_sparse(W2_rows, H, g, counts, idx, vals, dW1T, dW2))


# ---------------------------------------------------------------- training
class RunClock:
    """Round-end housekeeping shared by both loops: wall time, progress, checkpoints, stops."""

    def __init__(self, args: Args, L: Learner, state_dir: Path | None):
        self.args, self.L, self.state_dir = args, L, state_dir
        self.last = self.t0 = self.last_log = self.last_ckpt = time.perf_counter()
        self.steps0, self.ckpt_updates = L.env_steps, L.updates
        self.session_steps = 0

    def round_end(self, updates_applied: int) -> bool:
        """Returns True when training should stop."""
        args, L, now = self.args, self.L, time.perf_counter()
        L.wall_seconds += now - self.last
        self.last = now
        if L.target_episode < 0 and L.episodes_to_target >= 0 and updates_applied > 0:
            L.target_episode = L.episodes  # the first update after the target
        evaluated = evaluate_past_target(args, L)
        if evaluated:  # evaluation time is not training time
            now = self.last = time.perf_counter()
        L.finished = stop_rule_met(args, L)
        stop = L.finished or L.episodes >= args.max_episodes or L.wall_seconds >= args.max_wall_seconds
        due = (bool(evaluated) or now - self.last_ckpt >= args.checkpoint_seconds
               or (updates_applied > 0 and L.updates - self.ckpt_updates >= args.checkpoint_every))
        if self.state_dir is not None and (stop or due):
            L.save(self.state_dir / "checkpoint.npz")
            self.last_ckpt, self.ckpt_updates = now, L.updates
        if stop or now - self.last_log >= args.log_seconds:
            self.last_log = now
            self.progress()
        return stop

    def progress(self):
        L = self.L
        rate = (L.env_steps - self.steps0) / max(time.perf_counter() - self.t0, 1e-9)
        last = L.curve["reward"][-1] if L.curve["reward"] else float("nan")
        rr = float("nan") if L.running_reward is None else L.running_reward
        log(f"episode {L.episodes} | update {L.updates} | running reward {rr:.2f} | last {last:+.0f} | "
            f"steps {L.env_steps} | {rate:.0f} steps/s | wall {L.wall_seconds:.0f}s")


def train(args: Args, state_dir: Path | None = None, resume: bool = False) -> tuple[Learner, dict]:
    """Train (or continue) until a stop rule fires.  Returns the learner and this session's
    loop timing (for the benchmark)."""
    ckpt = state_dir / "checkpoint.npz" if state_dir is not None else None
    if resume and ckpt is not None and ckpt.exists():
        L = Learner.load(ckpt, args)
        log(f"resumed from {ckpt}: episode {L.episodes}, update {L.updates}")
    else:
        L = Learner(args)
    if state_dir is not None:
        state_dir.mkdir(parents=True, exist_ok=True)
    if L.finished:
        return L, {"loop_seconds": 0.0, "loop_steps": 0}
    loop = train_faithful if args.faithful else train_parallel
    return L, loop(args, L, state_dir)


def train_parallel(args: Args, L: Learner, state_dir: Path | None) -> dict:
    pool = EnvPool(env_seeds(args.seed, L.updates, args.num_envs), args.num_workers, args.env_groups,
                   args.max_episode_steps)
    buffers = [EpisodeBuffer() for _ in range(args.num_envs)]
    ended: dict[int, EpisodeBuffer] = {}  # episodes that ended this round, by env
    clock = RunClock(args, L, state_dir)
    t0, steps0 = time.perf_counter(), L.env_steps
    try:
        for s, envs, msg, uniforms in pool.rounds(lambda: L.rng.random(args.num_envs)):
            if s is None:  # end of round: finish episodes in env order, then update
                for e in sorted(ended):
                    ended[e].finish(L)
                ended.clear()
                applied = L.apply_ready([b.version[0] for b in buffers if b.version])
                if clock.round_end(applied):
                    break
                continue
            # msg: the reward of each env's previous action and the frame that followed it; when
            # that action ended the episode, the frame is already the next episode's first
            rewards, dones, counts, idx, vals = msg
            for k, e in enumerate(envs):
                if buffers[e].dlogp:  # the reward of this env's previous action
                    buffers[e].rewards.append(rewards[k])
                if dones[k]:
                    ended[e], buffers[e] = buffers[e], EpisodeBuffer()
            p, h = forward_sparse(L.W1T, L.W2, counts, idx, vals)
            up = uniforms < p
            pool.send(s, np.where(up, UP, DOWN))
            dlogp = up - p
            ends = np.cumsum(counts)
            for k, e in enumerate(envs):
                a, b = ends[k] - counts[k], ends[k]
                buffers[e].add(idx[a:b], vals[a:b], h[k], dlogp[k], L.updates)
            L.env_steps += len(envs)
    finally:
        pool.close()
    return {"loop_seconds": time.perf_counter() - t0, "loop_steps": L.env_steps - steps0}


def train_faithful(args: Args, L: Learner, state_dir: Path | None) -> dict:
    """The original loop: one env, dense frames, dense products, in this process."""
    env = make_env()
    frame = env.reset(seed=env_seeds(args.seed, L.updates, 1)[0])[0]
    prev = None
    xs, hs, dlogps, rewards = [], [], [], []
    clock = RunClock(args, L, state_dir)
    t0, steps0 = time.perf_counter(), L.env_steps
    while True:
        cur = preprocess_original(frame)
        x, prev = (cur - prev if prev is not None else np.zeros(D)), cur
        p, h = forward_dense(L.W1T, L.W2, x)
        y = 1.0 if L.rng.random() < p else 0.0
        xs.append(x)
        hs.append(h)
        dlogps.append(y - p)
        frame, reward, terminated, truncated, _ = env.step(UP if y else DOWN)
        rewards.append(reward)
        L.env_steps += 1
        if terminated or truncated or len(rewards) == args.max_episode_steps:
            X, H, W2 = np.vstack(xs), np.vstack(hs), L.W2

            def backward(g, dW1T, dW2):
                g1, g2 = backward_dense(W2, X, H, g)
                dW1T += g1
                dW2 += g2

            L.finish_episode(np.array(rewards), np.array(dlogps), backward)
            xs, hs, dlogps, rewards = [], [], [], []
            frame, prev = env.reset()[0], None
        if clock.round_end(L.apply_ready()):
            break
    env.close()
    return {"loop_seconds": time.perf_counter() - t0, "loop_steps": L.env_steps - steps0}


# ---------------------------------------------------------------- evaluation and play
def evaluate(args: Args, W1T, W2, n_games: int, rngs=None) -> dict:
    """n_games full games, actions sampled as in training.  Env e plays its first
    quota[e] games (not the first n_games to finish, which would favour short games).
    `rngs`: (action RNG, emulator seeds), the final evaluation's (eval_rngs) unless given."""
    rng, seeds = rngs or eval_rngs(args.seed)
    E = max(1, min(args.num_envs, n_games))
    quota = [n_games // E + (e < n_games % E) for e in range(E)]
    pool = EnvPool(seeds[:E], args.num_workers, args.env_groups, 0)
    score = np.zeros((E, 2))  # points for, against, in the current game
    games = []
    try:
        for s, envs, msg, uniforms in pool.rounds(lambda: rng.random(E)):
            if s is None:
                if len(games) == n_games:
                    break
                continue
            rewards, dones, counts, idx, vals = msg
            for k, e in enumerate(envs):
                score[e] += (rewards[k] > 0, rewards[k] < 0)
                if dones[k]:
                    if quota[e] > 0:
                        games.append(score[e].copy())
                        quota[e] -= 1
                    score[e] = 0
            p, _ = forward_sparse(W1T, W2, counts, idx, vals)
            pool.send(s, np.where(uniforms < p, UP, DOWN))
    finally:
        pool.close()
    games = np.array(games)
    wins = int(np.sum(games[:, 0] > games[:, 1]))
    low, high = wilson_interval(wins, len(games))
    return {"eval.games": len(games), "eval.win_rate": wins / len(games),
            "eval.win_rate_low": low, "eval.win_rate_high": high,
            "eval.points_for_mean": float(games[:, 0].mean()), "eval.points_against_mean": float(games[:, 1].mean())}


def wilson_interval(wins: int, games: int, z: float = 1.959964) -> tuple[float, float]:
    """95 % Wilson score interval of a win rate (stays inside [0, 1], sane at 0 or all wins)."""
    p, n = wins / games, games
    centre, half = p + z * z / (2 * n), z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return float((centre - half) / (1 + z * z / n)), float((centre + half) / (1 + z * z / n))


def record_play(args: Args, W1T, W2, path: Path) -> dict:
    """An animated GIF of the agent (right, green) playing the built-in AI, actions sampled as in
    training, ending soon after the first point the agent wins: the last `gif_max_frames` agent
    steps up to there.  A policy that wins no point in its first game (an early one) is shown
    losing the game's last points.  Frames are those after each step (the emulator's reset frame
    has other colours, and a paused clip shows its first frame).  Returns the clip's length and
    the score when it ends, which the page's caption cannot know."""
    from PIL import Image

    rng, seeds = eval_rngs(args.seed + 1)
    env = make_env()
    frame = env.reset(seed=seeds[0])[0]
    prev, frames = preprocess(frame), deque(maxlen=args.gif_max_frames)  # first input zeros, as in training
    points_for = points_against = 0
    tail = None  # frames still to show after the agent's first point
    while tail != 0:
        cur = preprocess(frame)
        idx, vals = frame_change(cur, prev)
        prev = cur
        p, _ = forward_sparse(W1T, W2, np.array([len(idx)]), idx, vals)
        frame, reward, terminated, truncated, _ = env.step(UP if rng.random() < p[0] else DOWN)
        frames.append(frame)
        points_for += reward > 0
        points_against += reward < 0
        if tail is not None:
            tail -= 1
        elif reward > 0:
            tail = args.gif_tail_frames
        if terminated or truncated:
            break
    env.close()
    for stride in (1, 2, 3, 4):  # keep the GIF under 3 MB
        images = [Image.fromarray(f) for f in list(frames)[::stride]]
        images[0].save(path, save_all=True, append_images=images[1:], duration=50 * stride, loop=0, optimize=True)
        if path.stat().st_size < 3_000_000:
            break
    return {"play.frames": len(frames), "play.points_for": int(points_for),
            "play.points_against": int(points_against)}


# ---------------------------------------------------------------- self-checks
def check_gradient(rng: np.random.Generator) -> float:
    """Max relative error |a - n| / (|a| + |n|) of backward_dense vs central differences
    of sum_t A_t log pi(a_t | x_t), on a small float64 policy.  Frames are +-1 everywhere
    (no exactly-zero gradients) and no pre-activation sits near the relu kink."""
    d, hidden, T = 30, 7, 12
    X = rng.choice([-1.0, 1.0], size=(T, d))
    while True:
        W1T, W2 = rng.standard_normal((d, hidden)) * 0.2, rng.standard_normal(hidden) * 0.5
        if np.abs(X @ W1T).min() > 1e-3:
            break
    y = rng.integers(0, 2, T).astype(float)
    A = rng.standard_normal(T)

    def objective():
        p, _ = forward_dense(W1T, W2, X)
        return np.sum(A * np.where(y == 1, np.log(p), np.log(1 - p)))

    p, H = forward_dense(W1T, W2, X)
    dW1T, dW2 = backward_dense(W2, X, H, A * (y - p))
    worst, eps = 0.0, 1e-5
    for w, analytic in ((W1T, dW1T), (W2, dW2)):
        for i in np.ndindex(w.shape):
            old = w[i]
            w[i] = old + eps
            up = objective()
            w[i] = old - eps
            down = objective()
            w[i] = old
            numeric = (up - down) / (2 * eps)
            worst = max(worst, abs(numeric - analytic[i]) / (abs(numeric) + abs(analytic[i]) + 1e-300))
    return worst


def random_sparse_episode(rng: np.random.Generator, T: int):
    counts = rng.integers(0, 40, T)
    counts[0] = 0  # an empty frame must work too
    idx = np.concatenate([rng.choice(D, c, replace=False) for c in counts]).astype(np.int16)
    vals = rng.choice(np.array([-1, 1], np.int8), counts.sum())
    X = np.zeros((T, D))
    X[np.repeat(np.arange(T), counts), idx] = vals
    return counts, idx, vals, X


def check_sparse_vs_dense(rng: np.random.Generator) -> float:
    """Max abs difference of sparse and dense forward and backward on random frames."""
    W1T, W2 = init_weights(rng, 200, np.float64)
    counts, idx, vals, X = random_sparse_episode(rng, 50)
    p_s, H_s = forward_sparse(W1T, W2, counts, idx, vals)
    p_d, H_d = forward_dense(W1T, W2, X)
    g = rng.standard_normal(50)
    dW1T, dW2 = np.zeros_like(W1T), np.zeros_like(W2)
    backward_sparse(np.tile(W2, (50, 1)), H_s, g, counts, idx, vals, dW1T, dW2)
    e1, e2 = backward_dense(W2, X, H_d, g)
    return float(max(np.abs(p_s - p_d).max(), np.abs(H_s - H_d).max(), np.abs(dW1T - e1).max(), np.abs(dW2 - e2).max()))


def check_preprocessing(seed: int, steps: int = 300) -> int:
    """Frames from the emulator: fast path vs the original's steps.  Returns mismatches."""
    env, rng = make_env(), np.random.default_rng(seed)
    frame = env.reset(seed=seed)[0]
    prev_fast, prev_orig, bad = np.zeros(D, bool), np.zeros(D), 0
    for _ in range(steps):
        fast, orig = preprocess(frame), preprocess_original(frame)
        idx, vals = frame_change(fast, prev_fast)
        dense = np.zeros(D)
        dense[idx] = vals
        bad += int(not np.array_equal(fast.astype(float), orig)) + int(not np.array_equal(dense, orig - prev_orig))
        prev_fast, prev_orig = fast, orig
        frame, _, terminated, truncated, _ = env.step(int(rng.choice([UP, DOWN])))
        if terminated or truncated:
            frame, prev_fast, prev_orig = env.reset()[0], np.zeros(D, bool), np.zeros(D)
    env.close()
    return bad


def check_returns() -> int:
    """1 if returns restart at each point, on a sequence worked out by hand (gamma 0.5)."""
    got = discounted_returns(np.array([0, 0, 1, 0, -1, 0, 0]), 0.5)
    return int(np.allclose(got, [0.25, 0.5, 1.0, -0.5, -1.0, 0.0, 0.0], atol=0, rtol=1e-15))


def paddle_row(frame) -> float:
    """Mean row of the agent's paddle (green, columns 140-143)."""
    rows = np.nonzero(np.all(frame[34:194, 140:144] == (92, 186, 92), axis=-1))[0]
    return rows.mean() if len(rows) else np.nan


def check_actions(seed: int) -> int:
    """1 if action 2 moves the agent's paddle up and 3 moves it down."""
    env = make_env()
    env.reset(seed=seed)
    names_ok = env.unwrapped.get_action_meanings()[UP:DOWN + 1] == ["RIGHT", "LEFT"]
    for _ in range(60):  # wait until the game has started and the paddle is drawn
        frame = env.step(0)[0]
    rows = [paddle_row(frame)]
    for action in (UP, DOWN):
        for _ in range(15):
            frame = env.step(action)[0]
        rows.append(paddle_row(frame))
    env.close()
    return int(names_ok and rows[1] < rows[0] < rows[2])


def self_checks(args: Args) -> dict:
    rng = np.random.default_rng([args.seed, 99])
    short = dataclasses.replace(args, faithful=False, max_episodes=args.determinism_episodes,
                                max_episode_steps=150, log_seconds=1e9, eval_every=0)
    runs = [train(short)[0] for _ in range(2)]
    L = runs[0]
    x = preprocess(np.zeros((210, 160, 3), np.uint8))
    p, h = forward_sparse(L.W1T, L.W2, np.array([1]), np.array([5], np.int16), np.array([1], np.int8))
    shapes_ok = (L.W1T.shape == (D, args.hidden) and L.W2.shape == (args.hidden,) and x.shape == (D,)
                 and p.shape == (1,) and h.shape == (1, args.hidden))
    return {
        "check.gradcheck_max_rel_error": check_gradient(rng),
        "check.sparse_dense_max_abs_diff": check_sparse_vs_dense(rng),
        "check.preprocess_mismatches": check_preprocessing(args.seed),
        "check.returns_reset_ok": check_returns(),
        "check.up_moves_paddle_up": check_actions(args.seed),
        "check.determinism_max_abs_diff": float(max(np.abs(runs[0].W1T - runs[1].W1T).max(),
                                                    np.abs(runs[0].W2 - runs[1].W2).max())),
        "check.determinism_updates": L.updates,
        "check.shapes_ok": int(shapes_ok),
    }


# ---------------------------------------------------------------- figures
def plot_learning_curve(L: Learner, out: Path, title: str = "Pong from pixels: REINFORCE") -> None:
    import matplotlib.pyplot as plt
    from matplotlib.ticker import StrMethodFormatter

    fig, ax = plt.subplots(figsize=(7, 4))
    episodes = np.arange(1, L.episodes + 1)
    # thousands of raw rewards form a band behind the curve; a few dozen would vanish that faint
    faint = 0.25 if L.episodes > 500 else 0.7
    ax.plot(episodes, L.curve["reward"], color="0.6", alpha=faint, lw=0.6, label="에피소드별 보상")
    ax.plot(episodes, L.curve["running"], color="C0", lw=1.8, label="러닝 리워드 (0.99)")
    marker = "카패시(2016): 약 8,000 에피소드"
    if L.episodes >= ORIGINAL_EPISODES:
        ax.axvline(ORIGINAL_EPISODES, color="C3", ls="--", lw=1, label=marker)
    else:
        # a short run stretched to 8,000 episodes would be a dot at the left edge: keep the axis on
        # the run and name the marker as beyond it
        ax.plot([], [], color="C3", ls="--", lw=1, label=f"{marker} (이 실행 범위 밖)")
    ax.axhline(0, color="k", lw=0.5)
    ax.set(xlabel="에피소드", ylabel="보상 (득점 − 실점)", ylim=(-21.5, 21.5),
           xlim=(0, max(L.episodes, 1) * 1.05), title=title)
    ax.xaxis.set_major_formatter(StrMethodFormatter("{x:,.0f}"))
    handles, labels = ax.get_legend_handles_labels()
    if L.evaluations:  # training past the target: each evaluation's win rate, on its own axis
        from matplotlib.ticker import PercentFormatter

        ev = ax.twinx()
        for final, style, label in ((False, dict(color="C2", marker="o", ms=3, lw=0.8), "평가 승률 (30판)"),
                                    (True, dict(color="C1", marker="*", ms=9, ls="none"), "최종 평가 승률 (100판)")):
            marks = [e for e in L.evaluations if e["final"] == final]
            if marks:
                ev.plot([e["episode"] for e in marks], [e["wins"] / e["games"] for e in marks], label=label, **style)
        ev.axhline(0.5, color="C2", lw=0.5, ls=":")
        ev.set(ylim=(0, 1), ylabel="내장 AI와의 평가 승률")
        ev.yaxis.set_major_formatter(PercentFormatter(1.0))
        more = ev.get_legend_handles_labels()
        handles, labels = handles + more[0], labels + more[1]
    # the curve climbs through the lower right; a label beside the marker would sit under the legend
    ax.legend(handles, labels, loc="upper left", fontsize=8, framealpha=0.9)
    save_figure(fig, out, "learning_curve", bbox_inches="tight")


def weight_mosaic(W1T: np.ndarray, W2: np.ndarray, n: int = 8, gap: int = 2) -> np.ndarray:
    """The n x n hidden units the output weighs most (largest |W2|, in that order), each unit's
    row of W1 as an 80x80 tile in [0, 1]: 0.5 is a zero weight, 0 and 1 are minus and plus the
    unit's largest absolute weight (one symmetric scale, so only the stronger sign reaches its
    end), and units compare by sign and shape. Gaps are white (1)."""
    tile = 80
    mosaic = np.ones((n * (tile + gap) - gap,) * 2)
    for k, j in enumerate(np.argsort(-np.abs(W2), kind="stable")[:n * n]):
        w = W1T[:, j].reshape(tile, tile)
        r, c = divmod(k, n)
        mosaic[r * (tile + gap):r * (tile + gap) + tile, c * (tile + gap):c * (tile + gap) + tile] = \
            0.5 + 0.5 * w / (np.abs(w).max() or 1.0)
    return mosaic


def plot_weights(W1T: np.ndarray, W2: np.ndarray, out: Path, n: int = 8) -> None:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 6.5))
    ax.imshow(weight_mosaic(W1T, W2, n), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    ax.axis("off")
    ax.set_title(f"|W2|가 가장 큰 은닉 유닛 {n * n}개의 첫 번째 층 가중치 (각 80x80)", fontsize=10)
    save_figure(fig, out, "weights", dpi=100, bbox_inches="tight")


# ---------------------------------------------------------------- command line
def parse_args(argv=None) -> tuple[Args, argparse.Namespace]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", choices=sorted(PROFILES), default="quick")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--state", type=Path, default=None)
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--faithful", action="store_true")
    parser.add_argument("--progress", action="store_true",
                        help="no training: draw what the last checkpoint in --state shows so far")
    for f in dataclasses.fields(Args):
        if f.name not in ("faithful", "seed"):
            parser.add_argument(f"--{f.name}", type=type(f.default), default=None)
    ns = parser.parse_args(argv)
    overrides = dict(PROFILES[ns.profile])
    overrides.update({f.name: getattr(ns, f.name) for f in dataclasses.fields(Args)
                      if f.name not in ("faithful", "seed") and getattr(ns, f.name) is not None})
    return Args(**overrides, faithful=ns.faithful, seed=ns.seed), ns


TREND_EPISODES = 5_000  # the recent stretch of the learning curve whose slope the progress report shows


def running_reward_trend(running: list[float], window: int = TREND_EPISODES) -> float:
    """How fast the running reward has been moving lately: the least-squares slope of its last
    `window` episodes, per 1,000 episodes (0 with fewer than two episodes)."""
    recent = np.asarray(running[-window:], dtype=float)
    if len(recent) < 2:
        return 0.0
    return float(np.polyfit(np.arange(len(recent)), recent, 1)[0] * 1000)


def training_metrics(L: Learner) -> dict:
    """The learning so far, as the engine's metrics (see ref.yml)."""
    return {
        **evaluation_metrics(L),
        "trend_per_1000_episodes": running_reward_trend(L.curve["running"]),
        "episodes": L.episodes, "updates": L.updates, "env_steps": L.env_steps,
        "wall_seconds": L.wall_seconds, "wall_hours": L.wall_seconds / 3600,
        "steps_per_second": L.env_steps / max(L.wall_seconds, 1e-9),
        "final_running_reward": float("nan") if L.running_reward is None else L.running_reward,
        "episodes_to_target": L.episodes_to_target,
    }


def report_progress(args: Args, state_dir: Path | None, out: Path) -> None:
    """--progress: an unfinished run's last checkpoint, as numbers, its learning curve so far, a
    clip of its policy playing and its first-layer weights."""
    ckpt = state_dir / "checkpoint.npz" if state_dir is not None else None
    if ckpt is None or not ckpt.exists():
        raise SystemExit(f"no checkpoint to report on: {ckpt or 'give --state DIR'}")
    L = Learner.load(ckpt, args)
    plot_learning_curve(L, out, title=f"Pong from pixels: REINFORCE (학습 중, 에피소드 {L.episodes:,})")
    play = record_play(args, L.W1T, L.W2, out / "play.gif")
    plot_weights(L.W1T, L.W2, out)
    (out / "metrics.json").write_text(json.dumps({**training_metrics(L), **play}, indent=1, sort_keys=True) + "\n")
    log(f"progress at episode {L.episodes}: running reward {L.running_reward:.2f}")


def main(argv=None) -> None:
    args, ns = parse_args(argv)
    ns.out.mkdir(parents=True, exist_ok=True)
    use_korean_font()
    if ns.progress:
        return report_progress(args, ns.state, ns.out)
    t0 = time.perf_counter()
    checks = self_checks(args)
    log("self-checks: " + json.dumps(checks))
    L, _ = train(args, ns.state, ns.resume)
    evaluation = evaluate(args, L.W1T, L.W2, args.eval_episodes)
    log("evaluation: " + json.dumps(evaluation))
    play = record_play(args, L.W1T, L.W2, ns.out / "play.gif")
    plot_learning_curve(L, ns.out)
    plot_weights(L.W1T, L.W2, ns.out)
    metrics = {
        **training_metrics(L),
        "config.num_envs": 1 if args.faithful else args.num_envs,
        **evaluation, **checks, **play, "run_seconds": time.perf_counter() - t0,
    }
    (ns.out / "metrics.json").write_text(json.dumps(metrics, indent=1, sort_keys=True) + "\n")
    log(f"wrote {ns.out / 'metrics.json'}")


if __name__ == "__main__":
    main()
