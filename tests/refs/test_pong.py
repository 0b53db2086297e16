"""Tests of the Pong REINFORCE reference (content/refs/pong-reinforce/pong.py).

They check numbers: preprocessing against the original's steps on recorded emulator
frames, returns that restart at each point, the backward pass against numerical
gradients, sparse against dense, determinism, and a checkpoint that survives SIGKILL.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
REF_DIR = ROOT / "content" / "refs" / "pong-reinforce"
FRAMES = Path(__file__).resolve().parent / "data" / "pong_frames.npz"


def _load():
    spec = importlib.util.spec_from_file_location("pong_reinforce", REF_DIR / "pong.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


pong = _load()


def small_args(**kw):
    """A short, fast run: few envs, episodes cut at 120 steps, 1 update per 10 episodes."""
    base = dict(num_envs=4, num_workers=0, env_groups=2, max_episode_steps=120, max_episodes=20,
                log_seconds=1e9, checkpoint_every=1, checkpoint_seconds=1e9, seed=7)
    base.update(kw)
    return pong.Args(**base)


# ---------------------------------------------------------------- preprocessing
def karpathy_prepro(frame):
    """The original preprocessing, written out independently of pong.py."""
    img = np.array(frame[35:195], dtype=np.uint8)
    img = img[::2, ::2, 0].copy()
    img[img == 144] = 0
    img[img == 109] = 0
    img[img != 0] = 1
    return img.astype(float).ravel()


@pytest.fixture(scope="module")
def recorded():
    with np.load(FRAMES, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def test_preprocess_equals_original_on_recorded_frames(recorded):
    n_frames = 0
    for frames in recorded.values():
        for frame in frames:
            fast = pong.preprocess(frame)
            assert fast.shape == (6400,)
            np.testing.assert_array_equal(fast.astype(float), karpathy_prepro(frame))
            n_frames += 1
    assert n_frames == 14
    # the recorded frames cover both backgrounds (109 at reset, 144 in play) and real content
    values = np.unique(np.concatenate([f[:, 35:195:2, ::2, 0].ravel() for f in recorded.values()]))
    assert {109, 144} <= set(values.tolist())
    assert 5 < pong.preprocess(recorded["rally"][3]).sum() < 200


def test_sparse_difference_frames_equal_dense(recorded):
    for frames in recorded.values():
        prev_fast, prev_dense = np.zeros(6400, bool), np.zeros(6400)
        for frame in frames:
            cur = pong.preprocess(frame)
            idx, vals = pong.frame_change(cur, prev_fast)
            dense = np.zeros(6400)
            dense[idx.astype(int)] = vals
            np.testing.assert_array_equal(dense, karpathy_prepro(frame) - prev_dense)
            assert idx.dtype == np.int16 and vals.dtype == np.int8
            prev_fast, prev_dense = cur, karpathy_prepro(frame)


def test_an_episodes_first_input_is_zeros_as_in_the_original():
    # pg-pong.py: x = cur_x - prev_x if prev_x is not None else np.zeros(D); prev_x = None at a reset
    group = pong.EnvGroup([5], max_steps=3)  # every third step ends the episode
    assert pong.unpack(group.first)[2].tolist() == [0]  # the reset frame: no changed pixel
    steps = []
    for _ in range(9):
        _, dones, counts, _, _ = pong.unpack(group.step(np.array([pong.UP], np.uint8)))
        steps.append((bool(dones[0]), int(counts[0])))
    assert [c for done, c in steps if done] == [0, 0, 0]  # each next episode's first frame: zeros
    assert any(c > 0 for done, c in steps if not done)  # within an episode, frames do differ


# ---------------------------------------------------------------- returns
@pytest.mark.parametrize("rewards, gamma, expected", [
    # worked out by hand: the sum restarts at every point
    ([0, 0, 1], 0.5, [0.25, 0.5, 1.0]),
    ([0, 0, 1, 0, -1], 0.5, [0.25, 0.5, 1.0, -0.5, -1.0]),
    ([0, 1, 0, 0, 0], 0.9, [0.9, 1.0, 0.0, 0.0, 0.0]),  # no point after step 1: zeros
    ([-1, -1, 0, 1], 0.99, [-1.0, -1.0, 0.99, 1.0]),  # back-to-back points don't mix
    ([1, 0, 0, 0, 0, 0, -1], 0.99, [1.0, -0.99**5, -0.99**4, -0.99**3, -0.99**2, -0.99, -1.0]),
])
def test_returns_restart_at_points(rewards, gamma, expected):
    got = pong.discounted_returns(np.array(rewards, float), gamma)
    np.testing.assert_allclose(got, expected, rtol=1e-14, atol=0)


def test_without_reset_returns_would_leak():
    # guard that the reset matters: plain discounting would credit the earlier rally
    got = pong.discounted_returns(np.array([0, 1, 0, -1], float), 0.5)
    assert got[0] == 0.5 and got[1] == 1.0


# ---------------------------------------------------------------- gradients
def test_backward_matches_numerical_gradient():
    rng = np.random.default_rng(0)
    d, hidden, T = 40, 9, 15
    X = rng.choice([-1.0, 1.0], size=(T, d))
    W1T, W2 = rng.standard_normal((d, hidden)) * 0.2, rng.standard_normal(hidden) * 0.5
    assert np.abs(X @ W1T).min() > 1e-4  # no relu kink within the finite-difference step
    y = rng.integers(0, 2, T).astype(float)
    A = rng.standard_normal(T)

    def objective():  # sum_t A_t log pi(a_t | x_t), written independently
        h = np.maximum(X @ W1T, 0)
        p = 1 / (1 + np.exp(-(h @ W2)))
        return np.sum(A * (y * np.log(p) + (1 - y) * np.log(1 - p)))

    p, H = pong.forward_dense(W1T, W2, X)
    dW1T, dW2 = pong.backward_dense(W2, X, H, A * (y - p))
    eps, errors = 1e-5, []
    for w, analytic in ((W1T, dW1T), (W2, dW2)):
        for i in np.ndindex(w.shape):
            old = w[i]
            w[i] = old + eps
            up = objective()
            w[i] = old - eps
            down = objective()
            w[i] = old
            numeric = (up - down) / (2 * eps)
            errors.append(abs(numeric - analytic[i]) / (abs(numeric) + abs(analytic[i])))
    assert max(errors) < 1e-6
    assert pong.check_gradient(np.random.default_rng(3)) < 1e-6


def test_sparse_forward_backward_equal_dense():
    rng = np.random.default_rng(1)
    W1T, W2 = pong.init_weights(rng, 200, np.float64)
    T = 60
    counts, idx, vals, X = pong.random_sparse_episode(rng, T)
    assert counts[0] == 0  # an empty difference frame is included
    p_s, H_s = pong.forward_sparse(W1T, W2, counts, idx, vals)
    p_d, H_d = pong.forward_dense(W1T, W2, X)
    np.testing.assert_allclose(p_s, p_d, rtol=0, atol=1e-10)
    np.testing.assert_allclose(H_s, H_d, rtol=0, atol=1e-10)
    # steps acted with two different W2 versions: the backward uses each step's own
    W2_other = W2 + 0.1 * rng.standard_normal(200)
    W2_rows = np.where(np.arange(T)[:, None] < 25, W2, W2_other)
    g = rng.standard_normal(T)
    dW1T, dW2 = np.zeros_like(W1T), np.zeros_like(W2)
    pong.backward_sparse(W2_rows, H_s, g, counts, idx, vals, dW1T, dW2)
    e1a, e2a = pong.backward_dense(W2, X[:25], H_d[:25], g[:25])
    e1b, e2b = pong.backward_dense(W2_other, X[25:], H_d[25:], g[25:])
    np.testing.assert_allclose(dW1T, e1a + e1b, rtol=0, atol=1e-10)
    np.testing.assert_allclose(dW2, e2a + e2b, rtol=0, atol=1e-10)
    assert np.abs(dW1T).max() > 1e-3  # not trivially zero


def test_batch_standardization_via_two_buffers_is_exact():
    """advantage_norm='batch' keeps sum R g and sum g; check against direct standardization."""
    rng = np.random.default_rng(2)
    args = pong.Args(advantage_norm="batch", batch_episodes=3, hidden=16, seed=3)
    L = pong.Learner(args)
    W1T, W2 = L.W1T.copy(), L.W2.copy()
    episodes = []
    for T in (30, 45, 20):
        counts, idx, vals, X = pong.random_sparse_episode(rng, T)
        _, H = pong.forward_dense(W1T, W2, X)
        rewards = np.zeros(T)
        rewards[rng.choice(T, 3, replace=False)] = rng.choice([-1.0, 1.0], 3)
        dlogp = rng.uniform(-1, 1, T)
        episodes.append((X, H, rewards, dlogp))
        L.finish_episode(rewards, dlogp, lambda g, a, b, X=X, H=H: [
            np.add(a, pong.backward_dense(W2, X, H, g)[0], out=a),
            np.add(b, pong.backward_dense(W2, X, H, g)[1], out=b)])
    assert len(L.ready) == 1
    R = np.concatenate([pong.discounted_returns(r, args.gamma) for _, _, r, _ in episodes])
    A = (R - R.mean()) / R.std()
    g = A * np.concatenate([d for *_, d in episodes])
    expected = pong.backward_dense(W2, np.vstack([e[0] for e in episodes]), np.vstack([e[1] for e in episodes]), g)
    np.testing.assert_allclose(L.ready[0][0], expected[0], rtol=0, atol=1e-10)
    np.testing.assert_allclose(L.ready[0][1], expected[1], rtol=0, atol=1e-10)


def test_rmsprop_step_is_the_original():
    args = pong.Args()
    rng = np.random.default_rng(4)
    w, cache, g = rng.standard_normal(50), rng.uniform(0, 1, 50), rng.standard_normal(50)
    w0, cache0 = w.copy(), cache.copy()
    pong.rmsprop_ascent(w, cache, g, args)
    expect_cache = 0.99 * cache0 + 0.01 * g**2
    np.testing.assert_allclose(cache, expect_cache, rtol=1e-15)
    np.testing.assert_allclose(w, w0 + 1e-4 * g / (np.sqrt(expect_cache) + 1e-5), rtol=1e-15)


# ---------------------------------------------------------------- environment
def test_action_ids_move_paddle_up_and_down():
    assert pong.check_actions(0) == 1


# ---------------------------------------------------------------- determinism
def test_same_seed_same_weights_and_layout_does_not_matter():
    runs = [pong.train(small_args())[0], pong.train(small_args())[0],
            pong.train(small_args(num_workers=2, env_groups=2))[0]]
    assert runs[0].updates == 2 and runs[0].episodes >= 20
    assert any(r != 0 for r in runs[0].curve["reward"])  # points were scored
    for other in runs[1:]:
        np.testing.assert_array_equal(runs[0].W1T, other.W1T)
        np.testing.assert_array_equal(runs[0].W2, other.W2)
        for key in ("reward", "running", "length"):  # ("wall" is timing)
            assert runs[0].curve[key] == other.curve[key]
        assert runs[0].env_steps == other.env_steps
    different = pong.train(small_args(seed=8))[0]
    assert not np.array_equal(runs[0].W2, different.W2)


def test_faithful_loop_trains():
    L, info = pong.train(small_args(faithful=True, max_episodes=10))
    assert L.updates == 1 and L.episodes == 10 and info["loop_steps"] == L.env_steps
    assert max(L.curve["length"]) <= 120 and L.running_reward is not None


# ---------------------------------------------------------------- checkpoints
def read_checkpoint(path: Path) -> dict:
    with np.load(path, allow_pickle=False) as z:
        out = {k: z[k] for k in z.files}
    out["meta"] = json.loads(str(out["meta"]))
    return out


def children(pid: int) -> list[int]:
    return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def running(pid: int) -> bool:
    """Alive and not a zombie (an exited orphan waits, briefly, for init to reap it)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_kill_and_resume(tmp_path):
    state = tmp_path / "state"
    kw = dict(num_envs=4, num_workers=2, env_groups=2, max_episode_steps=200, max_episodes=10**6,
              checkpoint_every=1, checkpoint_seconds=1e9, log_seconds=1e9, seed=5)
    code = (f"import sys; from pathlib import Path; sys.path.insert(0, {str(REF_DIR)!r}); import pong; "
            f"pong.train(pong.Args(**{kw!r}), Path({str(state)!r}))")
    # SIGKILL of the main process alone (as the OOM killer would): its workers must notice
    # and exit by themselves.  Its own process group only so that the test can clean up.
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=REF_DIR, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    ckpt = state / "checkpoint.npz"
    try:
        deadline = time.time() + 90
        while time.time() < deadline:
            if ckpt.exists() and read_checkpoint(ckpt)["meta"]["updates"] >= 2:
                break
            time.sleep(0.2)
        else:
            pytest.fail("no checkpoint with 2 updates within 90 s")
        workers = children(proc.pid)
        assert len(workers) == 2
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        deadline = time.time() + 15
        while time.time() < deadline and any(map(running, workers)):
            time.sleep(0.1)
        assert not any(map(running, workers)), "workers outlived their killed main process"
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    ck = read_checkpoint(ckpt)
    meta = ck["meta"]
    assert meta["updates"] >= 2 and meta["episodes"] >= 20 and not meta["finished"]
    assert meta["episodes"] - 10 * meta["updates"] == meta["in_batch"]  # partial batch carried over

    # 1) resume and stop after one round: the weights are the checkpoint's, untouched
    args = pong.Args(**{**kw, "max_episodes": meta["episodes"]})
    L, _ = pong.train(args, state, resume=True)
    for name in ("W1T", "W2", "cache_W1T", "cache_W2", "grad_W1T", "grad_W2"):
        np.testing.assert_array_equal(getattr(L, name), ck[name])
    assert (L.episodes, L.updates, L.in_batch) == (meta["episodes"], meta["updates"], meta["in_batch"])
    assert L.env_steps == meta["env_steps"] + 4  # exactly one more round of 4 envs
    rng = np.random.default_rng()
    rng.bit_generator.state = json.loads(str(ck["rng_state"]))
    rng.random(4)  # the round's draws
    assert L.rng.bit_generator.state == rng.bit_generator.state
    assert L.curve["reward"] == ck["curve_reward"].tolist()

    # 2) resume again and train on: the curve continues from the checkpoint
    args = pong.Args(**{**kw, "max_episodes": meta["episodes"] + 20})
    L2, _ = pong.train(args, state, resume=True)
    assert L2.episodes >= meta["episodes"] + 20 and L2.updates >= meta["updates"] + 2
    assert L2.curve["reward"][:meta["episodes"]] == ck["curve_reward"].tolist()
    assert L2.curve["running"][:meta["episodes"]] == ck["curve_running"].tolist()
    assert not np.array_equal(L2.W1T, ck["W1T"])
    final = read_checkpoint(ckpt)["meta"]
    assert final["episodes"] == L2.episodes and final["updates"] == L2.updates

    # 3) a run that reached its target resumes straight to the end
    args = pong.Args(**{**kw, "max_episodes": L2.episodes + 10**6, "target_running_reward": -100.0})
    L3, _ = pong.train(args, state, resume=True)
    assert L3.finished and L3.episodes_to_target == L2.episodes + 1
    L4, info = pong.train(args, state, resume=True)
    assert info["loop_steps"] == 0 and L4.episodes == L3.episodes
    np.testing.assert_array_equal(L4.W1T, L3.W1T)


def test_checkpoint_refuses_a_different_model(tmp_path):
    L, _ = pong.train(small_args(max_episodes=10), tmp_path)
    with pytest.raises(SystemExit):
        pong.train(small_args(max_episodes=10, hidden=50), tmp_path, resume=True)
    with pytest.raises(SystemExit, match="checkpoint has gamma=0.99, run asks 0.9"):
        pong.train(small_args(max_episodes=10, gamma=0.9), tmp_path, resume=True)
    with np.load(tmp_path / "checkpoint.npz", allow_pickle=False) as z:
        assert "rng_state" in z.files and z["W1T"].shape == (6400, 200)
    assert L.episodes >= 10 and L.updates == 1


def test_the_clip_ends_soon_after_the_agent_wins_its_first_point(tmp_path):
    # the committed full run's policy (running reward above -3.5 since episode 42,000) wins points
    # within a few rallies
    from PIL import Image

    with np.load(REF_DIR / "state" / "full" / "checkpoint.npz", allow_pickle=False) as z:
        W1T, W2 = z["W1T"], z["W2"]
    args = pong.Args(gif_max_frames=200, gif_tail_frames=10)
    play = pong.record_play(args, W1T, W2, tmp_path / "trained.gif")
    assert play["play.points_for"] == 1 and play["play.frames"] == 200
    with Image.open(tmp_path / "trained.gif") as gif:
        assert gif.n_frames == 200
    # a policy that learned nothing (p = 0.5 everywhere) is shown until its first point or its game's end
    play = pong.record_play(args, np.zeros_like(W1T), np.zeros_like(W2), tmp_path / "untrained.gif")
    assert play["play.points_for"] == 1 or play["play.points_against"] == 21


def test_progress_report_reads_the_checkpoint_and_trains_nothing(tmp_path):
    state, out = tmp_path / "state", tmp_path / "out"
    L, _ = pong.train(small_args(max_episodes=20), state)
    saved = (state / "checkpoint.npz").read_bytes()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pong.main(["--profile", "quick", "--out", str(out), "--seed", "7", "--state", str(state), "--progress"])
    # the Korean labels are drawn in a font that has Hangul (matplotlib warns of every missing glyph)
    assert not [w for w in caught if "missing from font" in str(w.message)]
    metrics = json.loads((out / "metrics.json").read_text())
    assert (metrics["episodes"], metrics["updates"], metrics["env_steps"]) == (L.episodes, L.updates, L.env_steps)
    assert metrics["final_running_reward"] == pytest.approx(L.running_reward)
    assert metrics["wall_hours"] == pytest.approx(L.wall_seconds / 3600)
    assert (out / "learning_curve.png").stat().st_size > 0 and (out / "learning_curve.svg").exists()
    # the clip is the checkpoint's policy playing: the same weights draw the same game
    args, _ = pong.parse_args(["--profile", "quick", "--out", str(out), "--seed", "7"])
    assert pong.record_play(args, L.W1T, L.W2, tmp_path / "again.gif")["play.frames"] > 1
    assert (out / "play.gif").read_bytes() == (tmp_path / "again.gif").read_bytes()
    assert (out / "weights.png").stat().st_size > 0  # the checkpoint's weights, as in the blog post
    assert (state / "checkpoint.npz").read_bytes() == saved  # read, not trained on
    with pytest.raises(SystemExit, match="no checkpoint to report on"):
        pong.main(["--out", str(out), "--state", str(tmp_path / "empty"), "--progress"])


def test_weight_mosaic_shows_the_units_the_output_weighs_most_with_zero_as_grey():
    rng = np.random.default_rng(0)
    W1T, W2 = rng.standard_normal((6400, 200)), rng.standard_normal(200)
    W1T[:, 17] = 0.0
    W1T[0, 17], W1T[1, 17] = 2.0, -4.0  # unit 17: one pixel up, one twice as strong down
    W2[17], W2[3] = -50.0, 40.0  # 17 counts most (by size, not sign), then 3
    mosaic = pong.weight_mosaic(W1T, W2, n=2, gap=2)
    assert mosaic.shape == (162, 162)
    first, second = mosaic[:80, :80], mosaic[:80, 82:162]
    assert first[0, 0] == 0.75 and first[0, 1] == 0.0 and (first.ravel()[2:] == 0.5).all()
    w3 = W1T[:, 3].reshape(80, 80)
    np.testing.assert_allclose(second, 0.5 + 0.5 * w3 / np.abs(w3).max())
    assert (mosaic[80:82] == 1.0).all() and (mosaic[:, 80:82] == 1.0).all()  # white gaps



def test_trend_is_the_recent_slope_per_thousand_episodes():
    # flat for 10,000 episodes, then +0.5 per 1,000 over the last 5,000: only the recent stretch counts
    running = [-20.0] * 10_000 + list(-20.0 + 0.0005 * np.arange(5_000))
    assert pong.running_reward_trend(running) == pytest.approx(0.5)
    assert pong.running_reward_trend(running, window=20_000) < 0.5  # a longer window dilutes it
    assert pong.running_reward_trend([3.0, 1.0]) == pytest.approx(-2000.0)  # falling: negative
    assert pong.running_reward_trend([-21.0]) == 0.0  # one episode has no slope


# ---------------------------------------------------------------- training past the target
def scheduled_play(schedule: list[tuple[int, int]], calls: list):
    """A stand-in for the policy's games: the n-th evaluation wins schedule[n][1] of its games."""
    def play(n_games, final):
        games, wins = schedule[len(calls)]
        assert games == n_games
        calls.append((n_games, final))
        return {"eval.games": games, "eval.win_rate": wins / games, "eval.points_for_mean": 20.0,
                "eval.points_against_mean": 19.0}
    return play


def test_the_stop_rule_fires_exactly_when_a_final_evaluation_wins_enough():
    args = pong.Args(eval_every=500, eval_check_games=30, eval_final_games=100, target_win_rate=0.55)
    L = pong.Learner(pong.Args(hidden=4))
    assert not pong.stop_rule_met(args, L) and pong.next_evaluation(args, L) == -1  # target not reached
    L.target_episode = 1000
    assert not pong.stop_rule_met(args, L) and pong.next_evaluation(args, L) == 1500
    # checks of 30 games: 16 wins (53 %) is below 55 %, 17 (57 %) calls 100 games; 54 of 100 go on, 55 stop
    schedule = [(30, 10), (30, 16), (30, 17), (100, 54), (30, 12), (30, 17), (100, 55)]
    calls, seen, stopped_at = [], [], None
    play = scheduled_play(schedule, calls)
    for episodes in range(1000, 5000, 7):  # round ends: 7 more episodes each
        L.episodes = episodes
        seen += [(e["episode"], e["games"], e["wins"], e["final"]) for e in pong.evaluate_past_target(args, L, play)]
        L.finished = pong.stop_rule_met(args, L)
        if L.finished:
            stopped_at = episodes
            break
    assert seen == [(1504, 30, 10, False), (2001, 30, 16, False), (2505, 30, 17, False), (2505, 100, 54, True),
                    (3002, 30, 12, False), (3506, 30, 17, False), (3506, 100, 55, True)]
    assert stopped_at == 3506 and len(calls) == len(schedule)
    assert pong.evaluate_past_target(args, L, play) == []  # a finished run evaluates no more
    m = pong.evaluation_metrics(L)
    assert (m["evals.checks"], m["evals.finals"], m["evals.last_episode"]) == (5, 2, 3506)
    assert m["evals.first_above_half_episode"] == 2001 and m["evals.last_win_rate"] == pytest.approx(17 / 30)
    assert m["evals.best_final_win_rate"] == pytest.approx(0.55) and m["target_episode"] == 1000
    # without evaluations (eval_every 0, the quick profile and the run up to episode 49,440) the target ends it
    assert pong.stop_rule_met(pong.Args(eval_every=0), L)


def test_evaluation_history_survives_a_checkpoint_round_trip_and_old_checkpoints_load(tmp_path):
    args = small_args(eval_every=500)
    L = pong.Learner(args)
    L.episodes, L.updates, L.target_episode, L.episodes_to_target = 1234, 123, 1000, 998
    L.evaluations = [{"episode": 1500, "update": 150, "games": 30, "wins": 17, "points_for": 20.1,
                      "points_against": 19.5, "final": False, "seconds": 40.2},
                     {"episode": 1500, "update": 150, "games": 100, "wins": 51, "points_for": 19.9,
                      "points_against": 19.8, "final": True, "seconds": 130.0}]
    L.save(tmp_path / "checkpoint.npz")
    again = pong.Learner.load(tmp_path / "checkpoint.npz", args)
    assert again.evaluations == L.evaluations and again.target_episode == 1000 and not again.finished
    assert pong.next_evaluation(args, again) == 2000
    # a format-1 checkpoint from before evaluations (finished at its target) still loads: it trains on
    ck = read_checkpoint(tmp_path / "checkpoint.npz")
    meta = {k: v for k, v in ck["meta"].items() if k not in ("target_episode", "evaluations")}
    meta["finished"] = True
    arrays = {k: v for k, v in ck.items() if k != "meta"}
    np.savez(tmp_path / "old.npz", **arrays, meta=np.array(json.dumps(meta)))
    old = pong.Learner.load(tmp_path / "old.npz", args)
    assert (old.target_episode, old.evaluations, old.finished) == (1234, [], False)
    assert pong.next_evaluation(args, old) == 1734
    assert pong.Learner.load(tmp_path / "old.npz", small_args()).finished  # eval_every 0: done at the target
    np.testing.assert_array_equal(old.W1T, L.W1T)


def test_evaluations_change_nothing_the_learning_sees(monkeypatch):
    """Training past the target with evaluations every 10 episodes learns exactly what the same run
    without them learns."""
    calls = []

    def fake_evaluate(args, W1T, W2, n_games, rngs=None):
        calls.append((n_games, rngs is None))
        return {"eval.games": n_games, "eval.win_rate": 0.0, "eval.points_for_mean": 0.0,
                "eval.points_against_mean": 21.0}

    monkeypatch.setattr(pong, "evaluate", fake_evaluate)
    past, _ = pong.train(small_args(target_running_reward=-100.0, eval_every=10, eval_check_games=3, max_episodes=40))
    plain, _ = pong.train(small_args(target_running_reward=100.0, max_episodes=40))
    np.testing.assert_array_equal(past.W1T, plain.W1T)
    np.testing.assert_array_equal(past.W2, plain.W2)
    assert past.curve["reward"] == plain.curve["reward"] and past.env_steps == plain.env_steps
    assert past.target_episode >= 10 and not past.finished and past.episodes >= 40
    assert len(past.evaluations) == len(calls) >= 2 and all(n == 3 and not final for n, final in calls)
    # the k-th at the first round end from target_episode + 10 k on (a round of 4 envs ends up to 4 episodes)
    for k, e in enumerate(past.evaluations, start=1):
        assert 0 <= e["episode"] - (past.target_episode + 10 * k) < 4 and e["games"] == 3


def test_the_committed_checkpoint_continues_the_finished_full_run():
    """The full run's results (episode 49,440) are the start of the committed checkpoint's curve:
    the continuation trains on from their checkpoint, with the rule of training past the target."""
    results = json.loads((REF_DIR / "results" / "full" / "results.json").read_text())["metrics"]
    args, _ = pong.parse_args(["--profile", "full", "--out", "unused"])
    L = pong.Learner.load(REF_DIR / "state" / "full" / "checkpoint.npz", args)
    n = results["episodes"]
    assert L.episodes >= n and L.target_episode == n and L.episodes_to_target == results["episodes_to_target"]
    assert L.curve["running"][n - 1] == results["final_running_reward"]
    assert args.eval_every == 500 and args.eval_episodes == args.eval_final_games == 100
    assert all(e["episode"] >= n + 500 for e in L.evaluations)


def test_the_win_rate_interval_is_wilsons():
    # 45 of 100: 35.6 % to 54.8 % (the textbook values); 9 of 20: 25.8 % to 65.8 %
    assert pong.wilson_interval(45, 100) == pytest.approx((0.3561, 0.5475), abs=1e-4)
    assert pong.wilson_interval(9, 20) == pytest.approx((0.2582, 0.6579), abs=1e-4)
    low, high = pong.wilson_interval(0, 2)
    assert low == pytest.approx(0.0, abs=1e-12) and 0.6 < high < 0.9
