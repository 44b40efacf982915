"""The Cases page filters by modality (AppTest on a real workspace): CT and radiographs side by
side, the Modality choice lists those imported, and choosing one keeps only its studies."""

from __future__ import annotations

from pathlib import Path

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from db.importer import import_path
from spine_core.phantom.rsna_layout import write_rsna_dataset
from tests.app_helpers import app, demo_workspace, pages_on, signed_in
from tests.radiograph_helpers import MONO1_SEED, MONO2_SEED, small_film, write_dx

CASES = "pages/cases.py"


def _modality_rows(at: AppTest) -> list[str]:
    (table,) = [d.value for d in at.dataframe if "Modality" in d.value.columns]
    return sorted(table["Modality"])


def test_the_modality_filter_keeps_ct_or_radiographs(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    ws = demo_workspace(tmp_path / "var")
    write_rsna_dataset(tmp_path / "ct", n_studies=1, seed=3, shape=(48, 64, 64), workers=1)
    film = small_film()
    write_dx(film, tmp_path / "dx" / "a", MONO1_SEED)
    write_dx(film, tmp_path / "dx" / "b", MONO2_SEED)
    for folder in ("ct", "dx"):
        assert import_path(tmp_path / folder, ws, progress=False).ok
    st.cache_data.clear()  # the page caches the modality list for a minute, per process
    with pages_on(ws, monkeypatch):
        at = app(signed_in(ws, "admin"), script=CASES).run()
        assert not at.exception, at.exception
        choice = at.selectbox(key="cases_modality")
        assert list(choice.options) == ["any", "CT", "DX"]
        assert _modality_rows(at) == ["CT", "DX", "DX"]
        choice.select("DX").run()
        assert not at.exception and _modality_rows(at) == ["DX", "DX"]
        at.selectbox(key="cases_modality").select("CT").run()
        assert _modality_rows(at) == ["CT"]
        assert any("of 1" in c.value for c in at.caption)
