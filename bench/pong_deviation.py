"""How far the Pong reference's speed options move each update from the original algorithm.

Two options change the numbers the learning sees; both are measured here on real batches,
collected by the reference itself from a checkpoint (by default the committed full run's):

* ``num_envs`` > 1: with several envs an episode can straddle an update, so some of a
  batch's steps were chosen by weights one or two updates older than the ones the batch
  updates.  The original (one env, an update only between episodes) never acts with
  stale weights.  For each batch this prints how many steps are stale, how far their
  p(UP) is from what the current weights give, and the cosine between the gradient the
  reference applies and the gradient of the original (every step re-evaluated with the
  current weights: same frames, actions and returns).
* ``dtype="float32"``: the same batch's gradient and RMSProp step in float32 against float64.

For scale, the cosine between the gradients of two different batches of the same
weights (sampling noise, which every update of the original has) is printed too.

    python bench/pong_deviation.py [--checkpoint PATH] [--updates 6]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import tempfile
from pathlib import Path

import numpy as np
from pong import load_pong  # bench/pong.py

ROOT = Path(__file__).resolve().parent.parent
CHECKPOINT = ROOT / "content" / "refs" / "pong-reinforce" / "state" / "full" / "checkpoint.npz"


def collect(pong, checkpoint: Path, updates: int):
    """Train `updates` more updates from the checkpoint with the default options, recording
    every finished episode (as the learner saw it) and the weights of every version."""
    episodes, weights = [], {}
    finish, apply_ready = pong.EpisodeBuffer.finish, pong.Learner.apply_ready

    def recording_finish(buf, L):
        episodes.append(dict(counts=np.array([len(i) for i in buf.idx]), idx=np.concatenate(buf.idx),
                             vals=np.concatenate(buf.vals), h=np.array(buf.h), dlogp=np.array(buf.dlogp),
                             version=np.array(buf.version), rewards=np.array(buf.rewards, float),
                             applied_to=L.updates))
        finish(buf, L)

    def recording_apply(L, *a, **kw):
        weights.setdefault(L.updates, (L.W1T.copy(), L.W2.copy()))
        n = apply_ready(L, *a, **kw)
        weights.setdefault(L.updates, (L.W1T.copy(), L.W2.copy()))
        return n

    pong.EpisodeBuffer.finish, pong.Learner.apply_ready = recording_finish, recording_apply
    try:
        with tempfile.TemporaryDirectory() as tmp:
            shutil.copy(checkpoint, Path(tmp) / "checkpoint.npz")
            with np.load(checkpoint, allow_pickle=False) as z:
                meta = json.loads(str(z["meta"]))
            args = dataclasses.replace(pong.Args(), max_episodes=meta["episodes"] + 10 * updates,
                                       log_seconds=1e9, checkpoint_every=10**9, checkpoint_seconds=1e9)
            L, _ = pong.train(args, Path(tmp), resume=True)
    finally:
        pong.EpisodeBuffer.finish, pong.Learner.apply_ready = finish, apply_ready
    return args, episodes, weights, meta


def batch_gradient(pong, args, batch, W1T, W2, W2_of: dict, *, fresh: bool, dtype=np.float64):
    """Gradient of one batch.  fresh=False: as the reference computes it (each step with the
    h and W2 that acted); fresh=True: as the original would, every step re-evaluated with
    (W1T, W2).  W2_of: the W2 of each weights version.  Returns (dW1T, dW2,
    |p_acted - p_fresh| of every step)."""
    W1T, W2 = W1T.astype(dtype), W2.astype(dtype)
    g1, g2, gaps = np.zeros_like(W1T), np.zeros_like(W2), []
    for ep in batch:
        y = (ep["dlogp"] > 0).astype(float)  # dlogp = y - p with 0 < p < 1
        p_acted = y - ep["dlogp"]
        p_now, h_now = pong.forward_sparse(W1T, W2, ep["counts"], ep["idx"], ep["vals"])
        gaps.append(np.abs(p_acted - p_now))
        advantage = pong.standardize(pong.discounted_returns(ep["rewards"], args.gamma))
        if fresh:
            h, dlogp, W2_rows = h_now, y - p_now, np.tile(W2, (len(y), 1))
        else:
            h, dlogp = ep["h"].astype(dtype), ep["dlogp"]
            W2_rows = np.stack([W2_of[v] for v in ep["version"]]).astype(dtype)
        pong.backward_sparse(W2_rows, h, advantage * dlogp, ep["counts"], ep["idx"], ep["vals"], g1, g2)
    return g1, g2, np.concatenate(gaps)


def rmsprop_step(g, cache, args):
    cache = args.decay_rate * cache + (1 - args.decay_rate) * g * g
    return args.learning_rate * g / (np.sqrt(cache) + args.rms_eps)


def flat(parts: tuple) -> np.ndarray:
    return np.concatenate([x.ravel() for x in parts]).astype(np.float64)


def cosine(a: tuple, b: tuple) -> float:
    va, vb = flat(a), flat(b)
    return float(va @ vb / (np.linalg.norm(va) * np.linalg.norm(vb)))


def rel(a: tuple, b: tuple) -> float:
    va, vb = flat(a), flat(b)
    return float(np.linalg.norm(va - vb) / np.linalg.norm(vb))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, default=CHECKPOINT)
    parser.add_argument("--updates", type=int, default=6, help="updates to collect and compare")
    ns = parser.parse_args()
    pong = load_pong()
    args, episodes, weights, meta = collect(pong, ns.checkpoint, ns.updates)
    W2_of = {v: w[1] for v, w in weights.items()}
    with np.load(ns.checkpoint, allow_pickle=False) as z:
        cache = z["cache_W1T"]  # RMSProp's squared-gradient cache, to turn gradients into steps
    print(f"\nfrom the checkpoint at episode {meta['episodes']} (update {meta['updates']}), "
          f"{args.num_envs} envs, {len(episodes)} episodes collected\n")
    print("| update | steps | stale steps | lag 1 / 2+ | mean / max abs p(UP) change of stale steps "
          "| cos(reference, original) | rel. diff | cos(float32, float64) | float32 W1 step rel. diff |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    batches = [episodes[i:i + args.batch_episodes] for i in range(0, len(episodes), args.batch_episodes)]
    batches = [b for b in batches if len(b) == args.batch_episodes]
    stale_all, total_all, cos_all, cos32_all, grads = 0, 0, [], [], []
    for batch in batches:
        u = batch[-1]["applied_to"]
        W1T, W2 = weights[u]
        lag = np.concatenate([u - ep["version"] for ep in batch])
        ref = batch_gradient(pong, args, batch, W1T, W2, W2_of, fresh=False)
        orig = batch_gradient(pong, args, batch, W1T, W2, W2_of, fresh=True)
        f32 = batch_gradient(pong, args, batch, W1T, W2, W2_of, fresh=False, dtype=np.float32)
        stale = lag > 0
        gaps = orig[2][stale]
        # the RMSProp step of W1 each gradient makes from the same (the checkpoint's) cache
        step64 = rmsprop_step(ref[0], cache, args)
        step32 = rmsprop_step(f32[0], cache.astype(np.float32), args).astype(float)
        cos_all.append(cosine(ref[:2], orig[:2]))
        cos32_all.append(cosine(f32[:2], ref[:2]))
        grads.append(ref[:2])
        stale_all += stale.sum()
        total_all += len(lag)
        print(f"| {u} | {len(lag):,} | {stale.mean():.1%} | {(lag == 1).sum():,} / {(lag >= 2).sum():,} "
              f"| {gaps.mean() if len(gaps) else 0:.2e} / {gaps.max() if len(gaps) else 0:.2e} "
              f"| {cos_all[-1]:.6f} | {rel(ref[:2], orig[:2]):.2e} | {cos32_all[-1]:.7f} "
              f"| {np.linalg.norm(step32 - step64) / np.linalg.norm(step64):.2e} |")
    noise = [cosine(grads[i], grads[i + 1]) for i in range(len(grads) - 1)]
    print(f"\nstale steps overall: {stale_all / max(total_all, 1):.1%} of {total_all:,}")
    print(f"cos(reference, original): min {min(cos_all):.6f}; cos(float32, float64): min {min(cos32_all):.7f}")
    print(f"for scale, cos between consecutive batches' gradients (sampling noise): "
          f"mean {np.mean(noise):.3f}, range {min(noise):.3f} to {max(noise):.3f}")


if __name__ == "__main__":
    main()
