"""Model metrics against hand-computed values, on real SQLite and PostgreSQL databases.

Classification: five studies with reports (and one readers' final label) and hand-chosen
probabilities. Segmentation: a two-subject VerSe dataset written as real NIfTI files and imported,
predicted by the threshold model of ``tests.backend_helpers`` (see ``_write_verse``: every block of
bone and of the dataset masks is placed so Dice and identification can be worked out by hand).
"""

from __future__ import annotations

import datetime as dt
import json
import math
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import select

from db import models as m
from db.importer import import_path
from db.model_metrics import (
    PATIENT,
    cache_path,
    classification_metrics,
    gather,
    model_versions,
    operating_points,
    patient_truth,
    segmentation_metrics,
)
from db.predictions import predict_study
from db.reports import set_report
from db.session import unit_of_work
from db.workspace import Workspace, open_workspace
from spine_core.config import Settings
from spine_core.inference.protocol import StudyPrediction
from spine_core.io.nifti import save_nifti
from spine_core.io.verse import Centroid, write_centroids
from spine_core.labels import CERVICAL
from spine_core.progress import Progress
from spine_core.volume import Volume
from tests.backend_helpers import BoneThresholdPredictor

# --------------------------------------------------------------------------------------------
# Classification
# --------------------------------------------------------------------------------------------

#: study -> (report labels, the model's level probabilities, the model's patient probability)
LOW = {level: 0.1 for level in CERVICAL}
CASES: dict[str, tuple[dict[str, bool] | None, dict[str, float], float]] = {
    "s1": ({lv: False for lv in CERVICAL}, {**LOW, "C3": 0.2}, 0.2),
    "s2": ({**{lv: False for lv in CERVICAL}, "C2": True}, {**LOW, "C2": 0.8}, 0.9),
    # the report says intact, the readers agreed on a C5 fracture (final label)
    "s3": ({lv: False for lv in CERVICAL}, {**{lv: 0.3 for lv in CERVICAL}, "C5": 0.4}, 0.4),
    "s4": (None, LOW, 0.5),  # no report, no reader: not labelled
    # labelled, but the model gave no C7 probability: not in the log loss
    "s5": ({lv: False for lv in CERVICAL}, {k: v for k, v in LOW.items() if k != "C7"}, 0.5),
}


def _bce(y: int, p: float) -> float:
    return -math.log(p) if y else -math.log(1 - p)


@pytest.fixture
def classification_ws(migrated_db_url: str,
                      tmp_path: Path) -> tuple[Workspace, int, dict[str, int]]:
    ws = open_workspace(Settings(data_dir=tmp_path / "var", db_url=migrated_db_url, workers=1))
    with unit_of_work(ws.sessions) as s:
        admin = m.User(username="admin", role="admin", password_hash="!")
        s.add(admin)
        version = m.ModelVersion(name="fracture-net", version="2", card={"arch": "resnet"})
        other = m.ModelVersion(name="fracture-net", version="1", card={})
        s.add_all([version, other])
        s.flush()
        ids: dict[str, int] = {}
        for name, (report, probs, patient) in CASES.items():
            study = m.Study(study_uid=f"1.2.3.{name[1]}", dataset="rsna")
            s.add(study)
            s.flush()
            ids[name] = study.id
            if report is not None:
                set_report(s, admin, study.id, report, "", "RIS")
            s.add(m.Prediction(study_id=study.id, model_version_id=version.id,
                               level_probabilities=probs, patient_probability=patient))
            # an older version that was always sure of the opposite must not leak in
            s.add(m.Prediction(study_id=study.id, model_version_id=other.id,
                               level_probabilities={lv: 1.0 for lv in CERVICAL},
                               patient_probability=0.0,
                               created_at=dt.datetime(2024, 1, 1, tzinfo=dt.UTC)))
        s.add(m.FinalLabel(study_id=ids["s3"], level="C5", fractured=True, source="readers"))
        version_id = version.id
    return ws, version_id, ids


def test_patient_truth_rule() -> None:
    intact = {lv: False for lv in CERVICAL}
    assert patient_truth({**intact, "C4": True}, None) is True
    assert patient_truth({"C4": True}, False) is True  # a fractured level wins over the report
    assert patient_truth(intact, True) is False  # all levels intact
    assert patient_truth({"C1": False}, None) is None
    assert patient_truth({"C1": False}, True) is True  # incomplete: the report's patient_overall


def test_log_loss_roc_and_operating_points_by_hand(
        classification_ws: tuple[Workspace, int, dict[str, int]]) -> None:
    ws, version_id, ids = classification_ws
    with unit_of_work(ws.sessions, readonly=True) as s:
        studies = gather(s, version_id)
        versions = model_versions(s)
    assert [v.label for v in versions] == ["fracture-net 2", "fracture-net 1"]  # latest used first
    assert versions[1].last_prediction_at == dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
    counts = {v.label: v.n_predictions for v in versions}
    assert counts == {"fracture-net 2": 5, "fracture-net 1": 5}
    by_uid = {st.study_uid: st for st in studies}
    assert by_uid["1.2.3.3"].truth["C5"] is True and by_uid["1.2.3.3"].truth[PATIENT] is True
    assert not by_uid["1.2.3.4"].labelled

    result = classification_metrics(studies)
    assert (result.n_predictions, result.n_labelled, result.n_scored) == (5, 4, 3)
    assert result.not_scored == ("1.2.3.5: the model gave no probability for C7",)

    # RSNA weighted log loss of s1, s2, s3 written out: weights 1/2 per level, 7/14 for the patient
    s1 = (6 * _bce(0, 0.1) + _bce(0, 0.2) + 7 * _bce(0, 0.2)) / (7 * 1 + 7)
    s2 = (6 * _bce(0, 0.1) + 2 * _bce(1, 0.8) + 14 * _bce(1, 0.9)) / (6 + 2 + 14)
    s3 = (6 * _bce(0, 0.3) + 2 * _bce(1, 0.4) + 14 * _bce(1, 0.4)) / (6 + 2 + 14)
    assert result.log_loss == pytest.approx((s1 + s2 + s3) / 3)
    pooled = (s1 * 14 + s2 * 22 + s3 * 22) / (14 + 22 + 22)
    assert result.log_loss_pooled == pytest.approx(pooled)

    assert list(result.roc) == [*CERVICAL, PATIENT]
    # C2: only s2 is positive and has the highest score of s1, s2, s3, s5
    c2 = result.roc["C2"]
    assert (c2.n_pos, c2.n_neg, c2.auc) == (1, 3, 1.0)
    # patient: positives s2 (0.9), s3 (0.4); negatives s1 (0.2), s5 (0.5) -> 3 of 4 pairs
    patient = result.roc[PATIENT]
    assert (patient.n_pos, patient.n_neg) == (2, 2) and patient.auc == pytest.approx(0.75)
    assert patient.fpr == (0.0, 0.0, 0.5, 0.5, 1.0) and patient.tpr == (0.0, 0.5, 0.5, 1.0, 1.0)
    # C1: no fracture anywhere -> AUC undefined, not an error
    assert result.roc["C1"].n_pos == 0 and math.isnan(result.roc["C1"].auc)

    at_half = operating_points(studies, 0.5)
    assert at_half[PATIENT] == type(at_half[PATIENT])(tp=1, fp=1, tn=1, fn=1)  # p >= t is positive
    assert operating_points(studies, 0.3, [PATIENT])[PATIENT].sensitivity == 1.0
    assert at_half["C5"].sensitivity == 0.0 and at_half["C5"].specificity == 1.0


# --------------------------------------------------------------------------------------------
# Segmentation
# --------------------------------------------------------------------------------------------

SHAPE = (20, 12, 12)
#: a0 steps 2 mm towards Superior, a1 1 mm Posterior, a2 1 mm Left.
AFFINE = np.array([[0.0, 0.0, 1.0, 0.0], [0.0, 1.0, 0.0, 0.0], [2.0, 0.0, 0.0, 0.0],
                   [0.0, 0.0, 0.0, 1.0]])
#: Three 4 x 6 x 6 vertebra blocks, top to bottom.
BLOCKS = [(slice(14, 18), slice(3, 9), slice(3, 9)),
          (slice(8, 12), slice(3, 9), slice(3, 9)),
          (slice(2, 6), slice(3, 9), slice(3, 9))]


def _write_verse(root: Path) -> None:
    """Subject "a": mask C1-C3 on the blocks; the CT's bone covers C1 whole, C2 on 3 of its 4
    slices, C3 on 3 of its 6 columns; centroid file = centres of the mask blocks.
    Subject "b": mask C2-C4 on the blocks (C1 is out of the scan); the CT's bone covers them all, so
    the threshold model, which numbers from the top, calls them C1-C3. No centroid file."""
    for subject, labels, bone in (
        ("a", (1, 2, 3), [BLOCKS[0], (slice(8, 11), slice(3, 9), slice(3, 9)),
                          (slice(2, 6), slice(3, 9), slice(3, 6))]),
        ("b", (2, 3, 4), BLOCKS),
    ):
        ct = np.zeros(SHAPE, np.int16)
        for block in bone:
            ct[block] = 400
        mask = np.zeros(SHAPE, np.uint8)
        for label, block in zip(labels, BLOCKS, strict=True):
            mask[block] = label
        image = Volume(ct, AFFINE)
        save_nifti(image, root / "rawdata" / f"sub-{subject}" / f"sub-{subject}_ct.nii.gz")
        derivatives = root / "derivatives" / f"sub-{subject}"
        save_nifti(Volume(mask, AFFINE), derivatives / f"sub-{subject}_seg-vert_msk.nii.gz")
        if subject == "a":
            centres = [
                Centroid(lab, tuple(image.index_to_lps([(b.start + b.stop - 1) / 2 for b in blk])))
                for lab, blk in zip(labels, BLOCKS, strict=True)
            ]
            write_centroids(derivatives / "sub-a_seg-subreg_ctd.json", centres, image, decimals=4)


class NoMaskPredictor(BoneThresholdPredictor):
    """Probabilities only (a classifier without a segmentation stage)."""

    def predict(self, volume: Volume, progress: Progress | None = None) -> StudyPrediction:
        result = super().predict(volume, progress)
        result.mask = None
        return result


@pytest.fixture
def verse_ws(migrated_db_url: str, tmp_path: Path) -> tuple[Workspace, dict[str, int]]:
    _write_verse(tmp_path / "verse")
    settings = Settings(data_dir=tmp_path / "var", db_url=migrated_db_url, workers=1)
    report = import_path(tmp_path / "verse", settings, actor="test", progress=False)
    assert report.studies_added == 2, report.problems
    ws = open_workspace(settings)
    with unit_of_work(ws.sessions, readonly=True) as s:
        studies = s.scalars(select(m.Study).order_by(m.Study.source_path)).all()
        names = {("a" if "sub-a" in st.source_path else "b"): st.id for st in studies}
        centroids = s.scalars(select(m.Centroid).where(m.Centroid.study_id == names["a"])).all()
        assert len(centroids) == 3
    return ws, names


def _predict(ws: Workspace, study_id: int, predictor: BoneThresholdPredictor | None = None,
             replace: bool = False) -> m.Prediction:
    row = predict_study(ws, predictor or BoneThresholdPredictor(), study_id, actor="t",
                        replace=replace)
    assert row is not None
    return row


def test_dice_and_identification_by_hand(verse_ws: tuple[Workspace, dict[str, int]]) -> None:
    ws, ids = verse_ws
    a, b = _predict(ws, ids["a"]), _predict(ws, ids["b"])
    seen: list[float] = []
    result = segmentation_metrics(ws, [a.id, b.id], progress=lambda f, text: seen.append(f))
    assert seen == [0.5, 1.0] and result.problems == () and result.pending == ()
    sa, sb = result.studies
    # a: C1 whole; C2 108 of 144 voxels -> 2*108/252; C3 72 of 144 -> 2*72/216
    assert sa.dice == pytest.approx({"C1": 1.0, "C2": 6 / 7, "C3": 2 / 3})
    # a: every vertebra identified; C2's centre is half a 2 mm slice off, C3's 1.5 columns
    assert sa.reference == "dataset centroids"
    assert sa.identified == {"C1": True, "C2": True, "C3": True}
    assert sa.distances == pytest.approx({"C1": 0.0, "C2": 1.0, "C3": 1.5}, abs=1e-3)
    # b: labels shifted by one level: no overlap of any label
    assert sb.dice == {"C1": 0.0, "C2": 0.0, "C3": 0.0, "C4": 0.0}
    # b (mask centres as reference): predicted C2 sits on the true C3 -> C3 is closer, missed;
    # predicted C3 sits on the true C4, 12 mm below the true C3 and closer to it than to the
    # true C2 (24 mm) -> identified (VerSe's rule); C4 not predicted -> missed
    assert sb.reference == "dataset mask"
    assert sb.identified == {"C2": False, "C3": True, "C4": False}
    assert sb.distances == pytest.approx({"C2": 12.0, "C3": 12.0})
    assert (result.hits, result.n_true) == (4, 6)
    assert result.identification_rate == pytest.approx(4 / 6)
    levels = result.dice_by_level
    assert [(d.level, d.n_studies) for d in levels] == [("C1", 2), ("C2", 2), ("C3", 2), ("C4", 1)]
    assert [d.mean for d in levels] == pytest.approx([0.5, 3 / 7, 1 / 3, 0.0])
    assert result.mean_dice == pytest.approx(((1 + 6 / 7 + 2 / 3) / 3 + 0.0) / 2)
    assert result.identification_by_level() == {"C1": (1, 1), "C2": (1, 2), "C3": (2, 2),
                                                "C4": (0, 1)}


def test_results_are_cached_per_prediction_and_recomputed_when_it_changes(
        verse_ws: tuple[Workspace, dict[str, int]]) -> None:
    ws, ids = verse_ws
    a = _predict(ws, ids["a"])
    assert segmentation_metrics(ws, [a.id], compute=False).pending == (a.id,)
    first = segmentation_metrics(ws, [a.id])
    cached = json.loads(cache_path(ws, a.id).read_text())
    assert cached["result"]["dice"]["C1"] == 1.0 and cached["key"]["mask_path"] == a.mask_path

    # the cached result is used: it no longer needs the mask file
    Path(a.mask_path).unlink()
    again = segmentation_metrics(ws, [a.id], compute=False)
    assert again.pending == () and again.studies == first.studies

    # a new prediction of the study (new file, new time) is computed again
    a2 = _predict(ws, ids["a"], replace=True)
    assert a2.id == a.id
    assert segmentation_metrics(ws, [a.id], compute=False).pending == (a.id,)
    assert segmentation_metrics(ws, [a.id]).studies[0].dice == first.studies[0].dice

    # a damaged cache file is recomputed, not an error
    cache_path(ws, a.id).write_text("{not json")
    assert segmentation_metrics(ws, [a.id]).studies == first.studies


def test_missing_files_and_predictions_without_masks_are_reported(
        verse_ws: tuple[Workspace, dict[str, int]]) -> None:
    ws, ids = verse_ws
    a = _predict(ws, ids["a"])
    b = _predict(ws, ids["b"], NoMaskPredictor())
    Path(a.mask_path).unlink()
    result = segmentation_metrics(ws, [a.id, b.id])
    assert result.studies == ()
    assert len(result.problems) == 1 and "predicted mask" in result.problems[0]
    assert "is missing; predict the study again" in result.problems[0]
    assert len(result.not_applicable) == 1
    assert result.not_applicable[0].endswith("the model gave no mask")
    assert not cache_path(ws, a.id).exists()  # a problem is retried next time
    assert math.isnan(result.identification_rate) and math.isnan(result.mean_dice)
