"""What every reference's figures share: Korean labels, like the site that shows them, and files
that a rerun of the same numbers writes byte for byte again.

References import this (the engine puts the project on their ``PYTHONPATH``, and their code
hash covers the modules they import, so a change here marks their results stale).
"""

from __future__ import annotations

from pathlib import Path

KOREAN_FONT = "Noto Sans CJK KR"  # Debian's fonts-noto-cjk, which `make system-deps` installs


def use_korean_font() -> None:
    """Draw figure text in Noto Sans CJK KR, or stop with a message saying how to install it.

    matplotlib's font cache may predate the font's installation, so the font's files are
    registered from the system's font folders. Without the font, matplotlib would draw every
    Hangul label as empty boxes; references call this before any work, so a missing font costs
    no run."""
    import matplotlib.pyplot as plt
    from matplotlib import font_manager

    for path in font_manager.findSystemFonts():
        if Path(path).name.startswith("NotoSansCJK"):
            font_manager.fontManager.addfont(path)
    try:
        font_manager.findfont(KOREAN_FONT, fallback_to_default=False)
    except ValueError:
        raise SystemExit(f"the figures' Korean labels need the font {KOREAN_FONT}: install Debian's "
                         "fonts-noto-cjk (`make system-deps`) and run again") from None
    plt.rcParams["font.family"] = KOREAN_FONT


def save_figure(fig, out: Path, stem: str, dpi: int = 120, **options) -> None:
    """Write ``out/<stem>.png`` and ``out/<stem>.svg``, then close the figure.

    Without matplotlib's version (in both files), the SVG's date and its random element ids, the
    same figure makes the same files: a rerun whose numbers did not move leaves no diff to review."""
    import matplotlib.pyplot as plt

    with plt.rc_context({"svg.hashsalt": stem}):
        fig.savefig(out / f"{stem}.png", dpi=dpi, metadata={"Software": None}, **options)
        fig.savefig(out / f"{stem}.svg", dpi=dpi, metadata={"Date": None, "Creator": None}, **options)
    plt.close(fig)
