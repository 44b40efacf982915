"""Write a synthetic demo dataset: a region of the spine in a published layout.

``region``: cervical (the RSNA-style generator), thoracolumbar or whole.
``layout``: rsna (DICOM + CSVs, cervical only), verse (VerSe 2020) or ctspine1k (CTSpine1K);
see :mod:`spine_core.phantom.rsna_layout` and :mod:`spine_core.phantom.nifti_layouts`.
Studies are generated in parallel processes; the same arguments give identical files.
"""

from __future__ import annotations

import json
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from spine_core.errors import InputError
from spine_core.phantom.rsna_layout import MANIFEST, _prepare, study_plans, study_seeds

LAYOUTS: tuple[str, ...] = ("rsna", "verse", "ctspine1k")
REGIONS: tuple[str, ...] = ("cervical", "thoracolumbar", "whole")
#: Grid shape (slices, rows, columns) of each region when none is given.
DEFAULT_SHAPES: dict[str, tuple[int, int, int]] = {
    "cervical": (200, 256, 256), "thoracolumbar": (320, 256, 256), "whole": (512, 256, 256),
}


def check_region_layout(region: str, layout: str) -> None:
    """Refuse an unknown region or layout, and RSNA for anything but the cervical spine."""
    if region not in REGIONS:
        raise InputError(f"region {region!r}: choose one of {', '.join(REGIONS)}")
    if layout not in LAYOUTS:
        raise InputError(f"layout {layout!r}: choose one of {', '.join(LAYOUTS)}")
    if layout == "rsna" and region != "cervical":
        raise InputError(f"the RSNA layout holds cervical studies only (RSNA 2022 is a cervical "
                         f"fracture dataset): use --layout verse or ctspine1k for --region {region}")


def _one(job: tuple[Path, str, str, int, int, tuple[int, int, int], Any]) -> dict[str, Any]:
    """Generate study ``index`` and write it (runs in a worker process)."""
    from spine_core.phantom.cases import from_cervical_study, from_spine_study
    from spine_core.phantom.nifti_layouts import write_ctspine_case, write_verse_case

    root, region, layout, index, seed, shape, plan = job
    if region == "cervical":
        from spine_core.phantom.study import generate_study

        case = from_cervical_study(generate_study(seed, shape, positive=plan.positive,
                                                  report_miss=plan.report_miss))
    else:
        from spine_core.phantom.spine_study import generate_spine_study

        case = from_spine_study(generate_spine_study(seed, shape, region=region))
    write = write_verse_case if layout == "verse" else write_ctspine_case
    return write(case, root, index)


def write_demo_dataset(
    out_dir: Path | str,
    *,
    region: str = "cervical",
    layout: str = "rsna",
    n_studies: int = 10,
    seed: int = 2022,
    shape: tuple[int, int, int] | None = None,
    workers: int = 2,
) -> Path:
    """Write ``n_studies`` synthetic studies of ``region`` in ``layout``; return the manifest path.

    ``layout == "rsna"`` is exactly :func:`~spine_core.phantom.rsna_layout.write_rsna_dataset`.
    An existing demo dataset in ``out_dir`` is replaced (of any layout).

    Raises:
        InputError: a bad region/layout pair, ``n_studies`` < 1, or ``out_dir`` not empty and
            not a demo dataset.
    """
    check_region_layout(region, layout)
    shape = DEFAULT_SHAPES[region] if shape is None else (int(shape[0]), int(shape[1]),
                                                          int(shape[2]))
    out = Path(out_dir)
    if layout == "rsna":
        from spine_core.phantom.rsna_layout import write_rsna_dataset

        write_rsna_dataset(out, n_studies=n_studies, seed=seed, shape=shape, workers=workers)
        return out / MANIFEST
    if n_studies < 1:
        raise InputError(f"n_studies must be at least 1, got {n_studies}")
    _prepare(out)
    plans = study_plans(seed, n_studies) if region == "cervical" else [None] * n_studies
    seeds = study_seeds(seed, n_studies)
    jobs = [(out, region, layout, i + 1, s, shape, p) for i, (s, p) in enumerate(zip(seeds, plans))]
    if workers <= 1 or n_studies == 1:
        entries = [_one(job) for job in jobs]
    else:
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=min(workers, n_studies), mp_context=ctx) as pool:
            entries = list(pool.map(_one, jobs))

    from spine_core.phantom.nifti_layouts import write_data_split, write_grades

    write_grades(out, entries)
    if layout == "ctspine1k":
        write_data_split(out, entries)
    doc = {"layout": layout, "region": region, "seed": int(seed), "shape": list(shape),
           "studies": [{k: v for k, v in e.items() if k != "grades"} for e in entries]}
    path = out / MANIFEST
    path.write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    return path
