"""A PACS over DICOMweb: search (QIDO-RS), retrieve (WADO-RS) and store (STOW-RS).

The HTTP is dicomweb-client's; this module adds what an import needs around it:

* authentication from the settings (HTTP basic, or a bearer token), never from a command line;
* every UID the PACS sends is checked as a UID (:func:`spine_core.io.uids.check_uid`) before it
  names a file, so a hostile or broken PACS cannot write outside the managed folder;
* a study is retrieved into ``<root>/.partial/<StudyInstanceUID>`` and renamed into place only
  when complete, so an interrupted or failed transfer leaves nothing half-retrieved behind (and a
  re-run starts that study again, skipping those already complete);
* HTTP failures become one clear line each (:class:`PacsError` and its kinds).
"""

from __future__ import annotations

import datetime as dt
import functools
import os
import shutil
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydicom import Dataset

from spine_core.errors import InputError, NotFound, SpineError
from spine_core.io.safe_paths import safe_join
from spine_core.io.uids import check_uid, is_uid

#: A study with more series than this is refused with a message (a PACS answering a thousand
#: series for one study is misconfigured or hostile; nothing is retrieved). The default of
#: ``SPINE_DICOMWEB_MAX_SERIES``.
MAX_SERIES_PER_STUDY = 200
#: Modalities whose series are retrieved when none is asked for.
IMAGE_MODALITIES: tuple[str, ...] = ("CT", "CR", "DX")
#: Marker written inside a study's folder once all its instances are there.
COMPLETE_MARKER = ".complete"


class PacsError(SpineError):
    """The PACS could not be used; the message says what happened and what to do."""


class PacsUnavailable(PacsError):
    """The PACS did not answer (down, wrong address, timeout)."""


class PacsAuthError(PacsError):
    """The PACS refused the credentials (401 / 403)."""


class PacsNotFound(PacsError, NotFound):
    """The PACS does not have the study (404, or an empty answer)."""


@dataclass(frozen=True)
class PacsConfig:
    """Where the PACS is and how to sign in (from :class:`spine_core.config.Settings`)."""

    url: str
    user: str = ""
    password: str = ""
    token: str = ""
    timeout_s: float = 60.0
    max_series: int = MAX_SERIES_PER_STUDY

    def __repr__(self) -> str:  # never print the secrets
        auth = "token" if self.token else ("basic" if self.user else "none")
        return f"PacsConfig(url={self.url!r}, auth={auth})"


@dataclass(frozen=True)
class StudySummary:
    """One study as the PACS describes it in a QIDO-RS answer."""

    study_uid: str
    patient_id: str = ""
    study_date: str = ""
    description: str = ""
    modalities: tuple[str, ...] = ()
    n_series: int | None = None
    n_instances: int | None = None


@dataclass
class RetrievedStudy:
    study_uid: str
    folder: Path
    n_instances: int
    series: list[str] = field(default_factory=list)
    skipped_series: list[str] = field(default_factory=list)  # "UID (modality SEG)"
    already_there: bool = False


def config_from_settings(settings: Any, url: str | None = None) -> PacsConfig:
    """The PACS of ``settings`` (``SPINE_DICOMWEB_*``); ``url`` overrides the address only."""
    address = (url or settings.dicomweb_url or "").rstrip("/")
    if not address:
        raise InputError("no PACS address: give the DICOMweb URL or set SPINE_DICOMWEB_URL")
    if not address.startswith(("http://", "https://")):
        raise InputError(f"PACS address {address!r} is not an http(s) URL")
    return PacsConfig(url=address, user=settings.dicomweb_user, password=settings.dicomweb_password,
                      token=settings.dicomweb_token, timeout_s=float(settings.dicomweb_timeout_s),
                      max_series=int(getattr(settings, "dicomweb_max_series", MAX_SERIES_PER_STUDY)))


def make_client(config: PacsConfig) -> Any:
    """A dicomweb-client ``DICOMwebClient`` with the configured authentication."""
    import requests
    from dicomweb_client.api import DICOMwebClient

    session = requests.Session()
    if config.token:
        session.headers["Authorization"] = f"Bearer {config.token}"
    elif config.user:
        session.auth = (config.user, config.password)
    client = DICOMwebClient(url=config.url, session=session, timeout=config.timeout_s)
    # A failing PACS is reported at once, not after minutes of exponential back-off.
    client.set_http_retry_params(retry=False)
    return client


# --- errors ---------------------------------------------------------------------------------------


def describe_failure(exc: BaseException, config: PacsConfig, what: str) -> PacsError:
    """One clear line for a failed PACS call (``what``: 'search', 'study 1.2.3', ...)."""
    import requests

    if isinstance(exc, PacsError):
        return exc
    where = config.url
    if isinstance(exc, requests.HTTPError) and exc.response is not None:
        code = exc.response.status_code
        if code in (401, 403):
            return PacsAuthError(
                f"{what}: the PACS at {where} refused the credentials (HTTP {code}); check "
                "SPINE_DICOMWEB_USER and SPINE_DICOMWEB_PASSWORD (or SPINE_DICOMWEB_TOKEN)")
        if code == 404:
            return PacsNotFound(f"{what}: not found on the PACS at {where} (HTTP 404); it may have "
                                "been deleted, or the UID is wrong")
        return PacsError(f"{what}: the PACS at {where} answered HTTP {code} "
                         f"({exc.response.reason or 'error'}); try again later or ask its administrator")
    if isinstance(exc, requests.Timeout):
        return PacsUnavailable(f"{what}: the PACS at {where} did not answer within "
                               f"{config.timeout_s:g} s; try again or raise SPINE_DICOMWEB_TIMEOUT_S")
    if isinstance(exc, requests.ConnectionError):
        return PacsUnavailable(f"{what}: cannot reach the PACS at {where} (is it running? is "
                               "SPINE_DICOMWEB_URL right?)")
    if isinstance(exc, requests.exceptions.JSONDecodeError):  # before RequestException: it is one
        return PacsError(f"{what}: the PACS at {where} sent an answer that is not valid DICOMweb "
                         f"({type(exc).__name__}: {_short(exc)}); ask its administrator")
    if isinstance(exc, requests.exceptions.ChunkedEncodingError | requests.exceptions.ContentDecodingError):
        return PacsError(f"{what}: the answer from the PACS at {where} was cut off before its end "
                         "(the connection closed mid-transfer); nothing of it was kept, try again")
    if isinstance(exc, requests.RequestException):
        return PacsError(f"{what}: the transfer from {where} failed ({type(exc).__name__}: "
                         f"{_short(exc)}); try again")
    return PacsError(f"{what}: the PACS at {where} sent an answer that is not valid DICOMweb "
                     f"({type(exc).__name__}: {_short(exc)}); ask its administrator")


def _short(exc: BaseException, limit: int = 160) -> str:
    """An exception's text on one line, at most ``limit`` characters."""
    text = " ".join(str(exc).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _call(config: PacsConfig, what: str, fn: Callable[[], Any]) -> Any:
    try:
        return fn()
    except PacsError:
        raise
    except Exception as exc:  # noqa: BLE001 - every failure of the HTTP library becomes one line
        raise describe_failure(exc, config, what) from exc


# --- QIDO-RS ---------------------------------------------------------------------------------------


def _value(item: Any, tag: str) -> Any:
    """First value of ``tag`` (8 hex digits) in a DICOM JSON object, or None."""
    if not isinstance(item, dict):
        raise PacsError("the PACS sent a search answer that is not DICOM JSON")
    element = item.get(tag)
    if not isinstance(element, dict):
        return None
    values = element.get("Value")
    if not isinstance(values, list) or not values:
        return None
    value = values[0]
    if isinstance(value, dict) and "Alphabetic" in value:  # person name
        return value["Alphabetic"]
    return value


def _all_values(item: dict[str, Any], tag: str) -> list[Any]:
    element = item.get(tag)
    values = element.get("Value") if isinstance(element, dict) else None
    return list(values) if isinstance(values, list) else []


def _int_or_none(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def date_filter(since: str | dt.date | None) -> str | None:
    """QIDO-RS StudyDate range ``YYYYMMDD-`` from ``YYYY-MM-DD`` (or a date)."""
    if since is None or since == "":
        return None
    if isinstance(since, dt.date):
        day = since
    else:
        try:
            day = dt.date.fromisoformat(str(since).strip())
        except ValueError:
            raise InputError(f"--since {since!r} is not a date; write it as YYYY-MM-DD") from None
    return f"{day:%Y%m%d}-"


def search_studies(
    client: Any,
    config: PacsConfig,
    *,
    study_uids: Sequence[str] = (),
    patient_id: str | None = None,
    modality: str | None = None,
    since: str | dt.date | None = None,
    limit: int | None = None,
) -> tuple[list[StudySummary], list[str]]:
    """Studies on the PACS matching the filters, and problems (answers with a non-UID study UID).

    With ``study_uids`` each UID is looked up (a UID that is not one is refused before any
    request); the filters narrow every search.
    """
    filters: dict[str, Any] = {}
    if patient_id:
        filters["PatientID"] = patient_id
    if modality:
        filters["ModalitiesInStudy"] = modality
    date_range = date_filter(since)
    if date_range:
        filters["StudyDate"] = date_range
    fields = ["StudyDescription", "ModalitiesInStudy", "NumberOfStudyRelatedSeries",
              "NumberOfStudyRelatedInstances", "PatientID", "StudyDate"]
    answers: list[Any] = []
    problems: list[str] = []
    if study_uids:
        for uid in study_uids:
            check_uid(uid, "StudyInstanceUID", "--study")
            query = {**filters, "StudyInstanceUID": uid}
            found = _call(config, f"search for study {uid}", functools.partial(
                client.search_for_studies, search_filters=query, fields=fields))
            if not found:  # named, and the other studies asked for go on
                problems.append(f"study {uid}: not found on the PACS at {config.url} (or it does "
                                "not match --patient/--modality/--since); check the UID")
                continue
            answers.extend(found)
    else:
        answers = _call(config, "search", lambda: client.search_for_studies(
            search_filters=filters, fields=fields, limit=limit))
    if not isinstance(answers, list):
        raise PacsError(f"search: the PACS at {config.url} sent an answer that is not a DICOM JSON list")
    studies: list[StudySummary] = []
    seen: set[str] = set()
    for item in answers:
        uid = _value(item, "0020000D")
        if not is_uid(uid):
            problems.append(f"the PACS listed a study whose StudyInstanceUID {str(uid)[:80]!r} is not a "
                            "DICOM UID; it was ignored")
            continue
        if uid in seen:
            continue
        seen.add(uid)
        studies.append(StudySummary(
            study_uid=uid,
            patient_id=str(_value(item, "00100020") or ""),
            study_date=str(_value(item, "00080020") or ""),
            description=str(_value(item, "00081030") or ""),
            modalities=tuple(str(v) for v in _all_values(item, "00080061")),
            n_series=_int_or_none(_value(item, "00201206")),
            n_instances=_int_or_none(_value(item, "00201208")),
        ))
    return studies, problems


# --- WADO-RS ---------------------------------------------------------------------------------------


def study_folder(root: Path, study_uid: str) -> Path:
    """The managed folder of a retrieved study: ``root/<StudyInstanceUID>`` (UID checked)."""
    return safe_join(root, check_uid(study_uid, "StudyInstanceUID", "PACS answer"))


def is_retrieved(root: Path, study_uid: str) -> bool:
    return (study_folder(root, study_uid) / COMPLETE_MARKER).is_file()


def retrieve_study(
    client: Any,
    config: PacsConfig,
    study_uid: str,
    root: Path,
    *,
    modalities: Iterable[str] = IMAGE_MODALITIES,
    on_instance: Callable[[int], object] | None = None,
) -> RetrievedStudy:
    """Retrieve a study's image series into ``root/<StudyInstanceUID>/<SeriesInstanceUID>/<SOP>.dcm``.

    Only series of ``modalities`` are retrieved (SEG, SR, presentation states... are listed in
    ``skipped_series``). Already complete (marker present): nothing is fetched. On any failure the
    partial folder is removed and a :class:`PacsError` names the study.
    """
    final = study_folder(root, study_uid)
    if (final / COMPLETE_MARKER).is_file():
        files = sum(1 for _ in final.rglob("*.dcm"))
        return RetrievedStudy(study_uid, final, files, already_there=True)
    partial_root = root / ".partial"
    partial = safe_join(partial_root, study_uid)
    if partial.exists():
        shutil.rmtree(partial)
    partial.mkdir(parents=True)
    wanted = {m.upper() for m in modalities}
    result = RetrievedStudy(study_uid, final, 0)
    try:
        series_list = _call(config, f"study {study_uid}", lambda: client.search_for_series(
            study_instance_uid=study_uid, fields=["Modality", "NumberOfSeriesRelatedInstances"]))
        if not isinstance(series_list, list):
            raise PacsError(f"study {study_uid}: the PACS sent a series list that is not DICOM JSON")
        if not series_list:
            raise PacsNotFound(f"study {study_uid}: not found on the PACS at {config.url} (no series)")
        if len(series_list) > config.max_series:
            raise PacsError(f"study {study_uid}: the PACS lists {len(series_list)} series, more than "
                            f"the {config.max_series} a CT study can plausibly have; not retrieved "
                            "(raise SPINE_DICOMWEB_MAX_SERIES if the study is real)")
        for item in series_list:
            series_uid = _value(item, "0020000E")
            modality = str(_value(item, "00080060") or "").upper()
            check_uid(series_uid, "SeriesInstanceUID", f"study {study_uid} on the PACS")
            if modality not in wanted:
                result.skipped_series.append(f"{series_uid} (modality {modality or '?'})")
                continue
            folder = safe_join(partial, series_uid)
            folder.mkdir()
            instances = _call(config, f"study {study_uid} series {series_uid}",
                              functools.partial(client.iter_series, study_instance_uid=study_uid,
                                                series_instance_uid=series_uid))
            count = _write_instances(config, instances, folder, study_uid, series_uid, on_instance)
            if count == 0:
                raise PacsNotFound(f"study {study_uid} series {series_uid}: the PACS sent no instance")
            result.n_instances += count
            result.series.append(series_uid)
        if not result.series:
            raise PacsError(f"study {study_uid}: no series of modality {'/'.join(sorted(wanted))} "
                            f"(found: {', '.join(result.skipped_series) or 'none'})")
        (partial / COMPLETE_MARKER).write_text(f"{result.n_instances}\n")
        if final.exists():
            shutil.rmtree(final)
        final.parent.mkdir(parents=True, exist_ok=True)
        os.replace(partial, final)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return result


def _write_instances(config: PacsConfig, instances: Iterator[Dataset], folder: Path, study_uid: str,
                     series_uid: str, on_instance: Callable[[int], object] | None) -> int:
    what = f"study {study_uid} series {series_uid}"
    count = 0
    iterator = iter(instances)
    while True:
        try:
            ds = next(iterator)
        except StopIteration:
            break
        except Exception as exc:  # noqa: BLE001 - a cut-off or garbled multipart answer
            raise describe_failure(exc, config, what) from exc
        if not isinstance(ds, Dataset):
            raise PacsError(f"{what}: the PACS sent something that is not a DICOM instance")
        got_study = str(ds.get("StudyInstanceUID", ""))
        got_series = str(ds.get("SeriesInstanceUID", ""))
        if got_study != study_uid or got_series != series_uid:
            raise PacsError(f"{what}: the PACS sent an instance of study {got_study[:64]!r} series "
                            f"{got_series[:64]!r} instead; not imported")
        sop = check_uid(str(ds.get("SOPInstanceUID", "")), "SOPInstanceUID", what)
        target = safe_join(folder, f"{sop}.dcm")
        tmp = target.with_name(f".tmp.{target.name}")
        ds.save_as(tmp, enforce_file_format=True)
        os.replace(tmp, target)
        count += 1
        if on_instance is not None:
            on_instance(1)
    return count


# --- STOW-RS ---------------------------------------------------------------------------------------


def store(client: Any, config: PacsConfig, datasets: Sequence[Dataset], what: str) -> None:
    """Send ``datasets`` by STOW-RS; a refusal (failed SOP sequence) is an error naming ``what``."""
    answer = _call(config, f"store {what}", lambda: client.store_instances(datasets=list(datasets)))
    failed = answer.get("FailedSOPSequence") if isinstance(answer, Dataset) else None
    if failed:
        reasons = sorted({str(item.get("FailureReason", "?")) for item in failed})
        raise PacsError(f"store {what}: the PACS at {config.url} refused {len(failed)} instance(s) "
                        f"(failure reason {', '.join(reasons)})")
