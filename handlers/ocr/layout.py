"""Reading order of OCR'd lines on an upright page: pieces of one visual line joined,
columns read one after the other (a line that spans the gutter, such as a title, stays
where it is), and lines grouped into paragraphs."""

from __future__ import annotations

from dataclasses import dataclass
from statistics import median

Box = tuple[float, float, float, float]  # left, top, right, bottom; y grows downwards
MIN_COLUMN_ROWS = 3  # rows each side of a gutter needs before it counts as a column
GUTTER_STEPS = 100  # candidate gutter positions tried across the text's width


@dataclass(frozen=True)
class Line:
    text: str
    box: Box

    @property
    def height(self) -> float:
        return self.box[3] - self.box[1]


@dataclass(frozen=True)
class Paragraph:
    text: str  # its lines' texts, joined by a space
    box: Box
    lines: tuple[Line, ...] = ()


def paragraphs(lines: list[Line]) -> list[Paragraph]:
    """The lines of a page as paragraphs, in the order a person reads them."""
    rows = join_rows(lines)
    if not rows:
        return []
    return group(in_columns(rows), median(row.height for row in rows))


def join_rows(lines: list[Line]) -> list[Line]:
    """Pieces of one visual line (OCR splits a line at wide spaces) joined left to right;
    pieces farther apart than a line's height stay apart: they may be two columns."""
    rows: list[list[Line]] = []
    for line in sorted(lines, key=lambda line: (line.box[1], line.box[0])):
        row = next((row for row in rows if same_row(row[-1], line)), None)
        if row is None:
            rows.append([line])
        else:
            row.append(line)
            row.sort(key=lambda piece: piece.box[0])
    return [Line(" ".join(piece.text for piece in row), union(row)) for row in rows]


def same_row(left: Line, line: Line) -> bool:
    overlap = min(left.box[3], line.box[3]) - max(left.box[1], line.box[1])
    gap = line.box[0] - left.box[2]
    height = max(left.height, line.height)
    return overlap > 0.5 * min(left.height, line.height) and -0.5 * height < gap < height


def in_columns(rows: list[Line]) -> list[Line]:
    """Rows in reading order: between rows that cross the gutter, the left column's rows
    come before the right column's; each column may have columns of its own."""
    gutter = find_gutter(rows)
    if gutter is None:
        return sorted(rows, key=lambda row: (row.box[1], row.box[0]))
    ordered: list[Line] = []
    band: list[Line] = []
    for row in sorted(rows, key=lambda row: row.box[1]):
        if row.box[0] < gutter < row.box[2]:
            ordered += side_by_side(band, gutter) + [row]
            band = []
        else:
            band.append(row)
    return ordered + side_by_side(band, gutter)


def side_by_side(band: list[Line], gutter: float) -> list[Line]:
    left = [row for row in band if row.box[2] <= gutter]
    right = [row for row in band if row.box[0] >= gutter]
    return in_columns(left) + in_columns(right)


def find_gutter(rows: list[Line]) -> float | None:
    """The x of the widest empty vertical band with a column of rows on each side, side by
    side (not one above the other); a few rows may cross it (titles, footers)."""
    if len(rows) < 2 * MIN_COLUMN_ROWS:
        return None
    left_edge = min(row.box[0] for row in rows)
    right_edge = max(row.box[2] for row in rows)
    height = median(row.height for row in rows)
    best: tuple[float, float] | None = None  # (gutter width, x)
    for step in range(1, GUTTER_STEPS):
        x = left_edge + (right_edge - left_edge) * step / GUTTER_STEPS
        left = [row for row in rows if row.box[2] <= x]
        right = [row for row in rows if row.box[0] >= x]
        crossing = len(rows) - len(left) - len(right)
        if min(len(left), len(right)) < MIN_COLUMN_ROWS or crossing > max(2, len(rows) // 4):
            continue
        width = min(row.box[0] for row in right) - max(row.box[2] for row in left)
        if width >= height and overlap(left, right) and (best is None or width > best[0]):
            best = (width, x)
    return None if best is None else best[1]


def overlap(left: list[Line], right: list[Line]) -> bool:
    """The two groups share at least half of the shorter one's height."""
    top = max(min(r.box[1] for r in left), min(r.box[1] for r in right))
    bottom = min(max(r.box[3] for r in left), max(r.box[3] for r in right))
    shorter = min(
        max(r.box[3] for r in group) - min(r.box[1] for r in group) for group in (left, right)
    )
    return bottom - top >= 0.5 * shorter


def group(rows: list[Line], height: float) -> list[Paragraph]:
    """Consecutive rows that sit close under each other, of a like size and alignment,
    make one paragraph."""
    result: list[list[Line]] = []
    for row in rows:
        last = result[-1][-1] if result else None
        if last is not None and continues(last, row, height):
            result[-1].append(row)
        else:
            result.append([row])
    return [
        Paragraph(" ".join(row.text for row in rows), union(rows), tuple(rows)) for rows in result
    ]


def continues(last: Line, row: Line, height: float) -> bool:
    gap = row.box[1] - last.box[3]
    sizes = max(last.height, row.height) / max(min(last.height, row.height), 1e-6)
    shared = min(last.box[2], row.box[2]) - max(last.box[0], row.box[0])
    # OCR boxes of tightly set lines overlap a little: up to half a line is still a gap.
    return -0.5 * min(last.height, row.height) < gap < 0.8 * height and sizes < 1.4 and shared > 0


def union(lines: list[Line]) -> Box:
    return (
        min(line.box[0] for line in lines),
        min(line.box[1] for line in lines),
        max(line.box[2] for line in lines),
        max(line.box[3] for line in lines),
    )
