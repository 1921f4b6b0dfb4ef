"""Row (output-channel) selection: whole rows by mean |last update| within γ, and packets whose
indices are contiguous runs in deployed space."""

from __future__ import annotations

import numpy as np
import torch
from small_student import manifest as _manifest
from small_student import student as _student
from small_student import teacher as _teacher

from mobdistill.contract import wire
from mobdistill.server.selection import AdamConfig
from mobdistill.server.session import ServerConfig, Session
from mobdistill.server.structured import RowDescent, coordinate_descent


def test_rows_with_the_largest_mean_update_within_gamma() -> None:
    weight = torch.nn.Parameter(torch.zeros(4, 5))
    bias = torch.nn.Parameter(torch.zeros(4))
    descent = coordinate_descent([weight, bias], gamma=0.5, selection="rows",
                                 rule=AdamConfig(), generator=torch.Generator().manual_seed(0))
    assert isinstance(descent, RowDescent)
    descent.begin_phase()  # phase 1: random rows, still whole rows within the budget
    first = descent.end_phase()
    assert all(bool(r.all() or not r.any()) for r in first[0])
    assert sum(int(m.sum()) for m in first) <= 12
    descent.last_update = [torch.tensor([[1.0] * 5, [3.0] * 5, [0.1] * 5, [2.0] * 5]),
                           torch.tensor([9.0, 0.0, 0.0, 0.0])]
    descent.begin_phase()
    masks = descent.end_phase()
    # budget 12 of 24: the bias element (mean 9), then rows 1 (3) and 3 (2): 11 coordinates
    assert masks[0].all(dim=1).tolist() == [False, True, False, True]
    assert not masks[0][[0, 2]].any()
    assert masks[1].tolist() == [True, False, False, False]


def test_ams_rows_cover_ams_coordinates_not_the_largest_mean() -> None:
    weight = torch.nn.Parameter(torch.zeros(4, 5))
    bias = torch.nn.Parameter(torch.zeros(4))
    last = [torch.tensor([[100.0, 0, 0, 0, 0], [5.0] * 5, [0.0] * 5, [4.0] * 5]),
            torch.tensor([0.1, 0.0, 0.0, 0.0])]
    picked = {}
    for selection in ("rows", "ams-rows"):
        descent = coordinate_descent([weight, bias], gamma=0.5, selection=selection,
                                     rule=AdamConfig(), generator=torch.Generator().manual_seed(0))
        descent.begin_phase()
        descent.end_phase()
        descent.last_update = last
        descent.begin_phase()
        masks = descent.end_phase()
        picked[selection] = (masks[0].all(dim=1).tolist(), masks[1].tolist())
    # AMS's top 12 of 24: the 100, rows 1 and 3, bias 0. The mean score spends the budget on
    # row 0 (mean 20) for one of them; coverage takes the three fully covered rows first.
    assert picked["rows"] == ([True, True, False, False], [False] * 4)
    assert picked["ams-rows"] == ([False, True, False, True], [True, False, False, False])


def test_row_selection_sends_contiguous_runs() -> None:
    cfg = ServerConfig(iterations=3, batch_size=2, lr=1e-2, gamma=0.3, selection="rows")
    model = _student()
    session = Session("phone-rows", model, _manifest(model), _teacher(), cfg)
    rng = np.random.default_rng(0)
    for t in range(4):
        session.add_frame(float(t), rng.integers(0, 256, (12, 16, 3), dtype=np.uint8))
    session.train_phase(10.0)
    result = session.train_phase(20.0)
    packet = wire.decode_update(result.packet, expected_base_sha256=session.space.base_sha256,
                                expected_device_id=session.credentials.device_id,
                                hmac_key=session.credentials.hmac_key)
    conv = session.space.mappings["conv.weight"]  # [4, 3, 3, 3]: rows of 27 in OHWI
    patch = next(p for p in packet.tensors if p.tensor_index == conv.tensor_index)
    rows = np.unique(patch.indices // 27)
    assert len(patch.indices) == 27 * len(rows) < conv.numel
    assert np.array_equal(patch.indices, (rows[:, None] * 27 + np.arange(27)).reshape(-1))
