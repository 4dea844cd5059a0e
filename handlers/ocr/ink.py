"""Where a page image has ink: the box around everything darker than the paper around it, so
that lines are looked for there and not in blank margins (finding lines costs in proportion
to the pixels looked at, and a page's margins are a third of it or more). The paper is
taken where it lies: a page photographed in uneven light is darker on one side, and
against the page's brightest paper that whole side would count as ink."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

DARKER = 24  # grey levels below the paper's that count as ink (light grey print included)
CELL = 8  # the paper's level is the mean of a cell of CELL x CELL pixels ...
REACH = 3  # ... and at each cell, the brightest within REACH cells (past a line's height)


def inked(pixels: np.ndarray, pad: int, grid: int = 1) -> tuple[int, int, int, int] | None:
    """(top, left, bottom, right) of the ink on an RGB page, `pad` pixels wider on every
    side and out to the next multiple of `grid` (within the page); None if the page has no
    ink. A row or column with a single dark pixel does not count: a speck of dust on a scan
    does not widen the box."""
    import cv2
    import numpy as np

    grey = cv2.cvtColor(pixels, cv2.COLOR_RGB2GRAY)
    height, width = grey.shape
    cells = cv2.resize(grey, (-(-width // CELL), -(-height // CELL)), interpolation=cv2.INTER_AREA)
    near = np.ones((2 * REACH + 1, 2 * REACH + 1), np.uint8)
    paper = cv2.resize(cv2.dilate(cells, near), (width, height), interpolation=cv2.INTER_LINEAR)
    dark = (cv2.subtract(paper, grey) > DARKER).astype(np.uint8)  # paper below grey: 0
    rows = np.flatnonzero(cv2.reduce(dark, 1, cv2.REDUCE_SUM, dtype=cv2.CV_32S)[:, 0] >= 2)
    columns = np.flatnonzero(cv2.reduce(dark, 0, cv2.REDUCE_SUM, dtype=cv2.CV_32S)[0] >= 2)
    if not len(rows) or not len(columns):
        return None

    def down(edge: int) -> int:
        return max(0, grid * ((edge - pad) // grid))

    def up(edge: int, size: int) -> int:
        return min(size, -grid * (-(edge + 1 + pad) // grid))

    return down(rows[0]), down(columns[0]), up(rows[-1], height), up(columns[-1], width)
