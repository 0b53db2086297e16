"""What both references' figures share (digest/refstyle.py)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from digest.refstyle import save_figure  # noqa: E402


def _draw():
    fig, (curve, image) = plt.subplots(1, 2)
    curve.plot([0, 1, 2], [1.0, 0.5, 2.0], label="curve")
    curve.legend()
    image.imshow(np.arange(16.0).reshape(4, 4))  # embedded as a PNG inside the SVG, with an id
    return fig


def test_the_same_figure_saved_twice_makes_the_same_files(tmp_path):
    # a rerun whose numbers did not move must leave no diff in the committed results
    for run in ("first", "second"):
        (tmp_path / run).mkdir()
        fig = _draw()
        save_figure(fig, tmp_path / run, "curve")
        assert not plt.fignum_exists(fig.number)  # closed: a long run draws many
    for ext in ("png", "svg"):
        first, second = (tmp_path / run / f"curve.{ext}" for run in ("first", "second"))
        assert first.read_bytes() == second.read_bytes(), ext
        # nor would a matplotlib upgrade that draws the same pixels change them
        assert matplotlib.__version__.encode() not in first.read_bytes(), ext
