"""What both references' figures share (digest/refs/style.py)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from digest.refs.style import save_figure  # noqa: E402


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


def test_a_figure_is_sized_in_css_pixels_whether_svg_or_png(tmp_path):
    # pages write a figure's size on its <img> (site.figure_size); a browser shows an SVG at its
    # width in points, 4/3 CSS pixel each, and a PNG at one CSS pixel per pixel
    from digest.site.render import figure_size

    save_figure(_draw(), tmp_path, "curve", dpi=96)
    svg, png = figure_size(tmp_path / "curve.svg"), figure_size(tmp_path / "curve.png")
    assert png == (614, 460)  # 6.4 x 4.8 inches at 96 dpi, cut to whole pixels
    assert svg == (614, 461)  # 460.8 x 345.6 points, rounded
