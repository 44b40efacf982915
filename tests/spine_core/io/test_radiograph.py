"""Radiographs read right: pydicom's real CR films (RG1 chest PA, RG3 extremity; uncompressed and
JPEG 2000, MONOCHROME1, one with PixelSpacing 0), synthetic DX films (ImagerPixelSpacing and the
magnification factor), PNG/JPEG with and without a sidecar, and bad input refused in one line with
bounded memory."""

from __future__ import annotations

import json
import tracemalloc
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from spine_core.errors import DicomError, InputError
from spine_core.io.radiograph import load_radiograph, read_radiograph_header, spacing_of, window_of
from spine_core.io.radiograph_image import load_image_radiograph
from spine_core.phantom.radiograph import BITS_STORED, Radiograph
from tests.radiograph_helpers import MONO1_SEED, MONO2_SEED, small_film, write_dx

RG = {"RG1": ("PA", 1955, 1841, 15), "RG3": ("AP", 1760, 1760, 10)}


def _testdata(name: str) -> Path:
    path = get_testdata_file(name, download=False)
    if path is None:
        pytest.skip(f"{name} is not installed (pip install pydicom-data)")
    return Path(path)


@pytest.mark.parametrize("name", ["RG1_UNCR.dcm", "RG1_UNCI.dcm", "RG1_J2KR.dcm", "RG1_J2KI.dcm",
                                  "RG3_UNCR.dcm", "RG3_UNCI.dcm", "RG3_J2KR.dcm", "RG3_J2KI.dcm"])
def test_pydicom_cr_films_open_inverted_with_their_window_view_and_spacing_unknown(name: str) -> None:
    path = _testdata(name)
    view, rows, cols, bits = RG[name[:3]]
    volume = load_radiograph(path)
    meta = volume.meta
    assert volume.shape == (1, rows, cols) and volume.array.dtype == np.int16
    assert meta["modality"] == "CR" and meta["photometric"] == "MONOCHROME1" and meta["inverted"]
    assert meta["view"] == view and meta["view_position"] == view
    # RG1 says PixelSpacing 0\0, RG3 has none: both measure in pixels, never guessed
    assert meta["spacing_source"] == "unknown" and meta["spacing_mm"] is None
    assert "spacing unknown" in meta["spacing_note"] and "pixels" in meta["spacing_note"]
    assert np.allclose(volume.spacing, 1.0)
    if name.startswith("RG1"):
        assert "PixelSpacing [0.0, 0.0]" in meta["spacing_note"]
    # MONOCHROME1: bone is bright after inversion over the stored range, and the window with it
    ds = pydicom.dcmread(path)
    top = (1 << bits) - 1
    assert np.array_equal(volume.array[0], top - ds.pixel_array.astype(np.int32))
    assert meta["window_source"] == "WindowCenter/WindowWidth"
    assert meta["window"] == [top - float(ds.WindowCenter), float(ds.WindowWidth)]
    assert meta["sop_uids"] == [ds.SOPInstanceUID]


@pytest.mark.parametrize("film", ["RG1", "RG3"])
def test_jpeg2000_decodes_to_the_uncompressed_pixels(film: str) -> None:
    lossless = load_radiograph(_testdata(f"{film}_J2KR.dcm")).array
    assert np.array_equal(lossless, load_radiograph(_testdata(f"{film}_UNCR.dcm")).array)
    lossy = load_radiograph(_testdata(f"{film}_J2KI.dcm")).array  # UNCI holds its decoded pixels
    assert np.array_equal(lossy, load_radiograph(_testdata(f"{film}_UNCI.dcm")).array)


@pytest.fixture(scope="module")
def film() -> Radiograph:
    return small_film()


@pytest.mark.parametrize("seed", [MONO1_SEED, MONO2_SEED])
def test_a_synthetic_dx_film_reads_back_its_pixels_and_patient_spacing(film: Radiograph, seed: int,
                                                                       tmp_path: Path) -> None:
    path = write_dx(film, tmp_path, seed)
    volume = load_radiograph(path)
    assert volume.meta["photometric"] == ("MONOCHROME1" if seed == MONO1_SEED else "MONOCHROME2")
    assert np.array_equal(volume.array[0], film.image)  # MONOCHROME1 inverted back: bone bright
    assert volume.meta["spacing_source"] == \
        "ImagerPixelSpacing/EstimatedRadiographicMagnificationFactor"
    assert np.allclose(volume.spacing[1:], film.pixel_mm, rtol=1e-4)
    assert volume.meta["view"] == "lateral"
    lo, hi = np.percentile(film.image, [2, 99.5])
    centre, width = volume.meta["window"]
    assert abs(centre - (lo + hi) / 2) <= 1 and abs(width - (hi - lo)) <= 1
    assert int(volume.array.max()) <= (1 << BITS_STORED) - 1


def test_spacing_rules_prefer_pixel_spacing_and_say_which() -> None:
    assert spacing_of([0.2, 0.3], [0.5, 0.5], "1.25").source == "PixelSpacing"
    imager = spacing_of(None, [0.15, 0.15], None)
    assert imager.source == "ImagerPixelSpacing" and imager.mm == (0.15, 0.15)
    assert "detector" in imager.note
    corrected = spacing_of([0, 0], ["0.2", "0.2"], "1.25")
    assert corrected.source.startswith("ImagerPixelSpacing/") and corrected.mm == (0.16, 0.16)
    for bad in ([0, 0], [-0.1, 0.1], ["nan", 1], [0.1]):
        assert spacing_of(bad, None, None).source == "unknown"
        assert spacing_of(None, bad, "1.1").mm is None


def test_window_comes_from_the_voi_lut_before_window_centre_and_width() -> None:
    ds = Dataset()
    ds.WindowCenter, ds.WindowWidth = "500", "1000"
    assert window_of(ds) == ((500.0, 1000.0), "WindowCenter/WindowWidth")
    item = Dataset()
    item.LUTDescriptor = [4096, 100, 12]
    item.LUTData = list(range(4096))
    ds.VOILUTSequence = Sequence([item])
    assert window_of(ds) == ((100 + 2048.0, 4096.0), "VOI LUT")
    assert window_of(Dataset()) == (None, "")


def _one_line(exc: BaseException, name: str) -> str:
    text = str(exc)
    assert "\n" not in text and name in text, text
    return text


def test_bad_radiographs_are_refused_in_one_line_before_decoding(film: Radiograph,
                                                                 tmp_path: Path) -> None:
    frames = write_dx(film, tmp_path / "frames", 1, NumberOfFrames=2,
                 PixelData=np.tile(film.image, (2, 1, 1)).tobytes())
    tiny = write_dx(film, tmp_path / "tiny", 1, Rows=1, Columns=1, PixelData=b"\0\0")
    huge = write_dx(film, tmp_path / "huge", 1, Rows=30000, Columns=30000, PixelData=b"\0" * 64)
    rgb = write_dx(film, tmp_path / "rgb", 1, SamplesPerPixel=3, PhotometricInterpretation="RGB",
              PlanarConfiguration=0, BitsAllocated=8, BitsStored=8, HighBit=7,
              Rows=32, Columns=32, PixelData=bytes(32 * 32 * 3))
    real_rgb = _testdata("SC_rgb_dcmtk_+eb+cr.dcm")  # a real JPEG secondary capture
    expected = {frames: "2 frames", tiny: "1×1 pixels", huge: "30000×30000",
                rgb: "colour image", real_rgb: "colour image"}
    tracemalloc.start()
    try:
        for path, what in expected.items():
            with pytest.raises(DicomError) as info:
                load_radiograph(path)
            assert what in _one_line(info.value, path.name)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 64 * 2**20, f"{peak / 2**20:.0f} MiB"  # nothing near 30000² was allocated


def test_png_without_sidecar_measures_in_pixels_and_a_sidecar_gives_spacing_and_view(
        tmp_path: Path) -> None:
    pixels = (np.arange(64 * 48, dtype=np.uint32).reshape(64, 48) * 21 % 65536).astype(np.uint16)
    png = tmp_path / "film.png"
    Image.fromarray(pixels).save(png)
    bare = load_image_radiograph(png)
    assert bare.shape == (1, 64, 48) and bare.array.dtype == np.int16  # the viewer holds int16
    assert bare.meta["value_offset"] == -32768  # 16-bit unsigned: shifted, nothing clipped
    assert np.array_equal(bare.array[0].astype(np.int32), pixels.astype(np.int32) - 32768)
    assert bare.meta["spacing_source"] == "unknown" and np.allclose(bare.spacing, 1.0)
    assert any("no sidecar" in w for w in bare.meta["warnings"])
    (tmp_path / "film.json").write_text(json.dumps({"pixel_spacing_mm": [0.2, 0.25],
                                                    "view": "lateral", "modality": "dx"}))
    described = load_image_radiograph(png)
    assert described.meta["spacing_source"] == "sidecar" and described.meta["view"] == "lateral"
    assert np.allclose(described.spacing[1:], [0.2, 0.25]) and described.meta["modality"] == "DX"
    (tmp_path / "film.json").write_text(json.dumps({"pixel_spacing_mm": 0, "view": "oblique"}))
    zero = load_image_radiograph(png)
    assert zero.meta["spacing_source"] == "unknown" and zero.meta["view"] == "unknown"
    (tmp_path / "film.json").write_text("{not json")
    with pytest.raises(InputError) as info:
        load_image_radiograph(png)
    assert "not JSON" in _one_line(info.value, "film.json")


def test_jpeg_grey_reads_and_colour_png_is_refused(tmp_path: Path) -> None:
    grey = np.tile(np.arange(0, 256, 4, dtype=np.uint8), (40, 1))
    jpg = tmp_path / "film.jpg"
    Image.fromarray(grey).convert("RGB").save(jpg, quality=95)  # grey saved as RGB: accepted
    volume = load_image_radiograph(jpg)
    assert volume.shape == (1, 40, 64) and volume.array.dtype == np.int16
    colour = np.zeros((40, 64, 3), dtype=np.uint8)
    colour[..., 0] = 200
    Image.fromarray(colour).save(tmp_path / "red.png")
    with pytest.raises(InputError) as info:
        load_image_radiograph(tmp_path / "red.png")
    assert "colour" in _one_line(info.value, "red.png")
    Image.fromarray(np.zeros((1, 1), dtype=np.uint8)).save(tmp_path / "dot.png")
    with pytest.raises(DicomError) as small:
        load_image_radiograph(tmp_path / "dot.png")
    assert "1×1" in _one_line(small.value, "dot.png")


def test_the_header_alone_says_what_the_importer_records(film: Radiograph, tmp_path: Path) -> None:
    header = read_radiograph_header(write_dx(film, tmp_path, MONO2_SEED, ViewPosition="PA"))
    assert header.view == "PA" and header.spacing.known and header.warnings == []
    assert header.presentation_intent == "FOR PRESENTATION"


@pytest.mark.parametrize(("name", "modality", "sop_class"), [
    ("JPGLosslessP14SV1_1s_1f_8b.dcm", "DX", "1.2.840.10008.5.1.4.1.1.1.1"),
    ("JPEG-LL.dcm", "CR", "1.2.840.10008.5.1.4.1.1.1"),
])
def test_jpeg_lossless_radiographs_decode_as_the_reference_does(name: str, modality: str,
                                                                sop_class: str,
                                                                tmp_path: Path) -> None:
    """Real JPEG lossless (process 14) files, their headers made a DX/CR radiograph."""
    ds = pydicom.dcmread(_testdata(name))
    ds.Modality, ds.SOPClassUID = modality, sop_class
    path = tmp_path / name
    ds.save_as(path)
    volume = load_radiograph(path)
    assert volume.meta["transfer_syntaxes"] == ["1.2.840.10008.1.2.4.70"]
    assert np.array_equal(volume.array[0], ds.pixel_array.astype(np.int32))


@pytest.mark.parametrize("syntax", ["1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.80",
                                    "1.2.840.10008.1.2.5"])
def test_a_dx_film_compressed_losslessly_reads_the_same_pixels(film: Radiograph, tmp_path: Path,
                                                               syntax: str) -> None:
    """JPEG 2000 lossless, JPEG-LS lossless and RLE written by pydicom's encoders."""
    plain = write_dx(film, tmp_path / "plain", MONO1_SEED)
    ds = pydicom.dcmread(plain)
    ds.compress(syntax)
    ds.save_as(tmp_path / "packed.dcm")
    volume = load_radiograph(tmp_path / "packed.dcm")
    assert volume.meta["transfer_syntaxes"] == [syntax]
    assert np.array_equal(volume.array, load_radiograph(plain).array)


def test_dx_for_processing_reads_without_a_window_of_its_own(film: Radiograph,
                                                             tmp_path: Path) -> None:
    path = write_dx(film, tmp_path, MONO2_SEED, SOPClassUID="1.2.840.10008.5.1.4.1.1.1.1.1",
                    PresentationIntentType="FOR PROCESSING")
    ds = pydicom.dcmread(path)
    del ds.WindowCenter, ds.WindowWidth
    ds.save_as(path)
    volume = load_radiograph(path)
    assert volume.meta["presentation_intent"] == "FOR PROCESSING"
    assert volume.meta["window"] is None and volume.meta["window_source"] == ""
    from spine_core.io.radiograph import display_window

    window = display_window(volume)
    assert window is not None and window[0] >= 1


def _png_claiming(path: Path, width: int, height: int) -> Path:
    """A PNG whose header claims ``width``×``height`` 8-bit grey pixels but holds a few bytes."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + \
            struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
                     + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))
    return path


@pytest.mark.parametrize(("width", "height"), [(30000, 30000), (16000, 16000), (2000, 2000)])
def test_a_png_header_claiming_a_huge_image_is_refused_in_one_line_memory_bounded(
        tmp_path: Path, width: int, height: int) -> None:
    """30000² and 16000² are refused from the header (side limit, Pillow's pixel limit); 2000²
    is decoded and found short. tracemalloc sees Python's and numpy's allocations (not Pillow's
    own buffer, which the side limit bounds)."""
    path = _png_claiming(tmp_path / "claims.png", width, height)
    tracemalloc.start()
    try:
        with pytest.raises((InputError, DicomError)) as info:
            load_image_radiograph(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    text = _one_line(info.value, "claims.png")
    assert "re-export" in text, text
    assert peak < 64 * 2**20, f"{peak / 2**20:.0f} MiB"


def test_a_greyscale_secondary_capture_reads_with_its_pixel_spacing(film: Radiograph,
                                                                    tmp_path: Path) -> None:
    path = write_dx(film, tmp_path, MONO2_SEED, SOPClassUID="1.2.840.10008.5.1.4.1.1.7",
                    Modality="OT", PixelSpacing=["0.3", "0.25"])
    volume = load_radiograph(path)
    assert volume.meta["modality"] == "OT" and volume.meta["spacing_source"] == "PixelSpacing"
    assert np.allclose(volume.spacing[1:], [0.3, 0.25])


def test_a_voi_lut_gives_the_window_inverted_with_monochrome1(film: Radiograph,
                                                              tmp_path: Path) -> None:
    item = Dataset()
    item.LUTDescriptor = [2048, 1000, 12]
    item.LUTData = np.arange(0, 4096, 2, dtype=np.uint16).tobytes()  # OW in a file
    path = write_dx(film, tmp_path, MONO1_SEED, VOILUTSequence=Sequence([item]))
    volume = load_radiograph(path)
    assert volume.meta["window_source"] == "VOI LUT"
    assert volume.meta["window"] == [(1 << BITS_STORED) - 1 - (1000 + 1024.0), 2048.0]


def test_a_16_bit_monochrome1_film_is_int16_with_an_offset_and_its_window_follows(
        film: Radiograph, tmp_path: Path) -> None:
    stored = (65535 - film.image.astype(np.uint32) * 16).astype(np.uint16)  # 16 bits, inverted
    ds_window = (65535 - 2000 * 16, 1000 * 16)
    path = write_dx(film, tmp_path, MONO1_SEED, BitsStored=16, HighBit=15,
                    PixelData=stored.tobytes(), WindowCenter=str(ds_window[0]),
                    WindowWidth=str(ds_window[1]))
    volume = load_radiograph(path)
    assert volume.array.dtype == np.int16 and volume.meta["value_offset"] == -32768
    shown = volume.array[0].astype(np.int32) + 32768  # bone bright, as the detector's 16 bits
    assert np.array_equal(shown, film.image.astype(np.int32) * 16)
    assert volume.meta["window"] == [2000 * 16 - 32768, 1000 * 16]
    assert volume.meta["value_range"] == [-32768, 32767]


def test_window_presets_of_a_film_are_its_own_window_full_range_and_bone_detail() -> None:
    """Keys 1/2/3 on a radiograph: the file's window (RG1's WindowCenter/Width, inverted), every
    value, and the brighter half; never CT's HU presets."""
    from spine_core.io.radiograph import viewer_options, window_presets
    from spine_core.render.windowing import BONE
    from spine_core.volume import Volume
    from spine_viewer.keymap import keymap_markdown

    volume = load_radiograph(_testdata("RG1_UNCR.dcm"))
    first, full, bone = window_presets(volume)
    centre, width = volume.meta["window"]
    assert (first.name, first.width, first.level) == ("the file's window", width, centre)
    values = volume.array[0, ::4, ::4]
    assert (full.width, full.level) == (round(float(values.max() - values.min())),
                                        round((float(values.max()) + float(values.min())) / 2))
    median, top = np.percentile(values.astype(np.float32), [50, 99.8])
    assert bone.level - bone.width / 2 == pytest.approx(median, abs=1)
    assert bone.level + bone.width / 2 == pytest.approx(top, abs=1)
    options = viewer_options(volume)
    assert options["presets"] == (first, full, bone) and options["length_unit"] == "px"
    assert options["window"] == (width, centre)  # the film opens in its first preset
    table = keymap_markdown(options["presets"])
    assert f"window: full range ({full.width:g}/{full.level:g})" in table
    assert "bone (1800/400)" not in table and "bone (1800/400)" in keymap_markdown()
    # a film without a window of its own: "auto" (0.5-99.5th percentiles) comes first
    no_window = Volume(volume.array, volume.affine, {**volume.meta, "window": None})
    assert window_presets(no_window)[0].name == "auto"
    # CT: no options, the viewer keeps its HU presets
    ct = Volume(np.zeros((4, 8, 8), np.int16), np.eye(4))
    assert viewer_options(ct) == {"window": "bone"} and BONE.width == 1800


def test_the_description_shows_a_view_a_person_set_over_the_header_s() -> None:
    from spine_core.io.radiograph import describe

    volume = load_radiograph(_testdata("RG1_UNCR.dcm"))
    assert "· view PA ·" in describe(volume.meta)
    assert "· view lateral (set by reader1; header: PA) ·" in describe(volume.meta, "lateral",
                                                                       "reader1")
    unknown = {**volume.meta, "view": "unknown"}
    assert "· view unknown ·" in describe(unknown)
    assert "view AP (set by admin; the header names none)" in describe(unknown, "AP", "admin")


@pytest.mark.parametrize(("name", "letters"), [("RG1_UNCR.dcm", ("H", "F", "R", "L")),
                                                ("RG3_J2KR.dcm", ("H", "F", "L", "R"))])
def test_the_edges_of_a_film_are_lettered_from_its_patient_orientation(
        name: str, letters: tuple[str, ...]) -> None:
    """RG1 (chest PA) says L\\F: rows run to the patient's left, so the right edge is L and the top
    H; RG3 (AP) says R\\F. The viewer gets them as ``film``."""
    from spine_core.io.radiograph import edge_letters, viewer_options

    volume = load_radiograph(_testdata(name))
    assert edge_letters(volume.meta) == letters
    assert viewer_options(volume)["film"] == letters


def test_a_synthetic_lateral_film_faces_left_and_bad_orientations_letter_nothing() -> None:
    from spine_core.io.radiograph import edge_letters, orientation_of

    assert orientation_of(["p", "F"]) == ("P", "F")
    assert edge_letters({"patient_orientation": ["P", "F"]}) == ("H", "F", "A", "P")
    assert edge_letters({"patient_orientation": ["AF", "R"]}) == ("L", "R", "PH", "AF")
    for bad in (None, "PF", ["P"], ["P", "X"], ["", "F"], ["P", "F", "A"], 5):
        assert orientation_of(bad) is None, bad
    assert edge_letters({"patient_orientation": None}) == ("", "", "", "")
    assert edge_letters({}) == ("", "", "", "")
