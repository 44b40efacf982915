"""Grid instances drawn on the film: grown by ``film_expand_px``, cut where the upsampled U-Net
probability falls under ``film_foreground``."""

from __future__ import annotations

import numpy as np

from spine_core.inference.xray.config import XrayConfig
from spine_core.inference.xray.decode import Instances
from spine_core.inference.xray.model import _to_film

G = 16


def _one_vertebra() -> tuple[Instances, np.ndarray]:
    labels = np.zeros((G, G), np.int32)
    labels[6:10, 6:10] = 1
    yy, xx = np.mgrid[:G, :G]
    prob = np.exp(-(((yy - 7.5) / 3.0) ** 2 + ((xx - 7.5) / 3.0) ** 2)).astype(np.float32)
    inst = Instances(labels, [(7.5, 7.5)], [(6.0, 6.0, 10.0, 10.0)], [0.9],
                     {"C2": [0.9], "S": [0.0]})
    return inst, prob


def test_the_film_threshold_draws_the_edge_past_the_grid_instance() -> None:
    inst, prob = _one_vertebra()
    tight = XrayConfig(grid=G, film_foreground=0.3, film_expand_px=0)
    grown = XrayConfig(grid=G, film_foreground=0.3, film_expand_px=1)
    a = _to_film(inst, prob, (64, 64), tight, "ensemble")
    b = _to_film(inst, prob, (64, 64), grown, "ensemble")
    assert int((a.instances == 1).sum()) == 16 * 16  # the grid square, 4 film pixels a grid pixel
    assert int((b.instances == 1).sum()) > int((a.instances == 1).sum())
    assert (b.instances[a.instances == 1] == 1).all()
    assert b.vertebrae[0].level == "C2" and (b.mask[b.instances == 1] == b.mask.max()).all()


def test_a_higher_film_threshold_draws_less() -> None:
    inst, prob = _one_vertebra()
    low = _to_film(inst, prob, (64, 64), XrayConfig(grid=G, film_foreground=0.3), "ensemble")
    high = _to_film(inst, prob, (64, 64), XrayConfig(grid=G, film_foreground=0.8), "ensemble")
    assert 0 < int((high.instances > 0).sum()) < int((low.instances > 0).sum())
