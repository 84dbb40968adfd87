"""The side-by-side turntable sheet puts each run's frames in its own labelled cell."""

import numpy as np
import pytest
from benchmark_scripts import load_benchmark


@pytest.fixture(scope="module")
def sheet():
    return load_benchmark("turntable_sheet")


def test_cells_land_in_their_row_and_column(sheet):
    size, count = 16, 3
    colours = [[(200, 0, 0), (0, 200, 0)], [(0, 0, 200), (90, 90, 90)]]
    cells = [[np.broadcast_to(np.array(c, np.uint8), (count, size, size, 3)).copy() for c in row] for row in colours]
    cells[1][0][2] = 7  # the last frame of one cell differs
    out = sheet.sheet_frames(cells, ["sds", "cds"], ["a red plain sphere", "a blue plain cube"])
    assert out.shape == (count, sheet.TITLE_HEIGHT + 2 * size, sheet.LABEL_WIDTH + 2 * size, 3)
    for i in range(2):
        for j in range(2):
            y, x = sheet.TITLE_HEIGHT + i * size + size // 2, sheet.LABEL_WIDTH + j * size + size // 2
            assert tuple(out[0, y, x]) == colours[i][j]
    assert tuple(out[2, sheet.TITLE_HEIGHT + size + 1, sheet.LABEL_WIDTH + 1]) == (7, 7, 7)
    label_area = out[0, :, :sheet.LABEL_WIDTH]
    assert (label_area < 128).any(), "row labels are drawn"


def test_unequal_turntables_are_refused(sheet):
    a = np.zeros((4, 8, 8, 3), np.uint8)
    b = np.zeros((5, 8, 8, 3), np.uint8)
    with pytest.raises(SystemExit, match="differ in size"):
        sheet.sheet_frames([[a, b]], ["sds"], ["p", "q"])


def test_missing_turntable_names_the_fix(sheet, tmp_path):
    with pytest.raises(SystemExit, match="--strips"):
        sheet.load_cell(tmp_path)
