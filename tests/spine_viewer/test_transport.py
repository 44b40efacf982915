"""spine_viewer.transport (and the chunk store and box conversions): what travels to the browser."""

from __future__ import annotations

import zlib

import numpy as np
import pytest

from spine_core.errors import InputError
from spine_core.volume import Volume
from spine_viewer import transport
from spine_viewer.boxes import BoxEvent, ViewerBox, event_from_browser, to_display
from spine_viewer.chunks import ChunkStore

AXIAL_SPL = np.array([[0, 0, 0.5, 10.0], [0, 0.6, 0, -20.0], [2.0, 0, 0, 30.0], [0, 0, 0, 1]])


def _volume(shape: tuple[int, int, int] = (20, 12, 10), affine: np.ndarray = AXIAL_SPL) -> Volume:
    rng = np.random.default_rng(3)
    return Volume(rng.integers(-1024, 3000, size=shape, dtype=np.int16), affine)


def _memmap(tmp_path, array: np.ndarray) -> np.ndarray:
    path = tmp_path / "v.npy"
    np.save(path, array)
    return np.load(path, mmap_mode="r")


# ---- plan --------------------------------------------------------------------------------------


def test_plan_sends_the_current_slice_first_then_blocks_outward() -> None:
    plan = transport.chunk_plan(100, 40, 16)
    assert plan[0] == (40, 41)
    assert plan[1] == (41, 57) and plan[2] == (24, 40)
    covered = sorted(k for a, b in plan for k in range(a, b))
    assert covered == list(range(100)), "every slice exactly once"
    centres = [abs((a + b - 1) / 2 - 40) for a, b in plan[1:]]
    assert centres == sorted(centres) or all(  # nearest first, alternating up and down
        centres[i] <= centres[i + 2] for i in range(len(centres) - 2))


@pytest.mark.parametrize("current", [0, 1, 50, 98, 99])
def test_plan_covers_the_volume_wherever_it_starts(current: int) -> None:
    plan = transport.chunk_plan(100, current, 7)
    assert plan[0] == (current, current + 1)
    assert sorted(k for a, b in plan for k in range(a, b)) == list(range(100))
    assert all(b - a <= 7 for a, b in plan)


def test_plan_clamps_the_current_slice_and_rejects_nonsense() -> None:
    assert transport.chunk_plan(10, 99, 4)[0] == (9, 10)
    with pytest.raises(InputError):
        transport.chunk_plan(0, 0, 4)
    with pytest.raises(InputError):
        transport.chunk_plan(10, 0, 0)


def test_slices_per_chunk_follows_the_byte_budget() -> None:
    assert transport.slices_per_chunk((300, 512, 512), 16 << 20) == 32
    assert transport.slices_per_chunk((300, 512, 512), 1) == 1


def test_check_range_refuses_what_the_browser_should_not_ask() -> None:
    assert transport.check_range([3, 7], 10, 4) == (3, 7)
    for bad in ([5, 5], [-1, 2], [8, 11], [0, 9], ["a", 2], [1]):
        with pytest.raises(InputError):
            transport.check_range(bad, 10, 4)


# ---- encoding ----------------------------------------------------------------------------------


def test_round_trip_of_image_and_mask_through_zlib(tmp_path) -> None:
    vol = _volume()
    image = _memmap(tmp_path, vol.array)
    mask = (np.arange(image.size) % 29).astype(np.uint8).reshape(image.shape)
    geometry = transport.display_geometry(vol)
    chunk = transport.encode_chunk(geometry.view(image), geometry.view(mask), (4, 9))
    header, pieces = transport.chunk_header(chunk)
    frame = transport.pack_frame({"chunk": header}, pieces)
    parsed, payload = transport.unpack_frame(frame)
    parts = {p["kind"]: p for p in parsed["chunk"]["parts"]}
    img_part, mask_part = parts["image"], parts["mask"]
    raw_img = bytes(payload[img_part["offset"]:img_part["offset"] + img_part["length"]])
    raw_mask = bytes(payload[mask_part["offset"]:mask_part["offset"] + mask_part["length"]])
    # plain zlib streams (what DecompressionStream('deflate') reads), of the declared raw size
    assert len(zlib.decompress(raw_img)) == img_part["raw"] == 5 * 12 * 10 * 2
    assert len(zlib.decompress(raw_mask)) == mask_part["raw"] == 5 * 12 * 10
    got = transport.decode_part(raw_img, img_part["codec"]).reshape(5, 12, 10)
    np.testing.assert_array_equal(got, vol.array[4:9])
    np.testing.assert_array_equal(
        transport.decode_part(raw_mask, mask_part["codec"]).reshape(5, 12, 10), mask[4:9])
    assert got.dtype == np.int16


def test_shuffle_is_the_byte_planes_of_little_endian_int16() -> None:
    values = np.array([1, -1, 256, -32768, 32767], dtype=np.int16)
    raw = transport.shuffle16(values)
    assert raw == bytes([1, 255, 0, 0, 255] + [0, 255, 1, 128, 127])
    np.testing.assert_array_equal(transport.unshuffle16(raw), values)


def test_other_orientations_travel_in_display_order(tmp_path) -> None:
    # stored sagittal slices (a0 towards patient Left), rows towards Inferior, cols Anterior
    affine = np.array([[1.5, 0, 0, 0], [0, 0, -0.5, 0], [0, -0.7, 0, 0], [0, 0, 0, 1]])
    vol = _volume((8, 14, 16), affine)
    geometry = transport.display_geometry(vol)
    view = geometry.view(_memmap(tmp_path, vol.array))
    assert view.shape == (14, 16, 8)
    chunk = transport.encode_chunk(view, None, (2, 6))
    data = transport.decode_part(chunk.parts[0].data, chunk.parts[0].codec).reshape(4, 16, 8)
    np.testing.assert_array_equal(data, np.asarray(geometry.view(vol.array))[2:6])
    header = transport.volume_header("v", geometry, False, [(0, 14)])
    assert header["shape"] == [14, 16, 8] and header["spacing"] == pytest.approx([0.7, 0.5, 1.5])
    # the header's affine maps display indices to the same LPS point as the stored voxel
    k, r, c = 3, 5, 6
    src = geometry.display_to_source((k, r, c))
    lps = np.asarray(header["affine"]) @ [k, r, c, 1]
    np.testing.assert_allclose(lps[:3], vol.index_to_lps(src))


def test_no_float_dtype_is_ever_produced() -> None:
    for dtype in (np.int16, np.int32, np.uint16, np.float32, np.float64):
        slab = transport.as_int16_slab(np.linspace(-2000, 40000, 60).reshape(3, 4, 5).astype(dtype))
        assert slab.dtype == np.int16
        assert slab.max() <= 32767
    with pytest.raises(InputError):
        transport.as_int16_slab(np.zeros((1, 2, 2), dtype=np.complex64))
    assert transport.as_uint8_slab(np.ones((1, 2, 2), dtype=np.int32)).dtype == np.uint8
    with pytest.raises(InputError):
        transport.as_uint8_slab(np.full((1, 2, 2), 300, dtype=np.int32))


def test_encoding_reads_only_the_slab(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    image = _memmap(tmp_path, _volume((30, 12, 10)).array)
    seen: list[tuple[int, ...]] = []
    real = transport.as_int16_slab

    def spy(view: np.ndarray) -> np.ndarray:
        seen.append(view.shape)
        return real(view)

    monkeypatch.setattr(transport, "as_int16_slab", spy)
    transport.encode_chunk(image, None, (10, 13))
    assert seen == [(3, 12, 10)]


# ---- memory budget -----------------------------------------------------------------------------


def test_refusal_above_the_browser_memory_limit() -> None:
    shape = (300, 512, 512)
    assert transport.browser_bytes(shape, False) == 300 * 512 * 512 * 2
    assert transport.browser_bytes(shape, True) == 300 * 512 * 512 * 3
    assert transport.check_browser_memory(shape, True, 1 << 30) == 300 * 512 * 512 * 3
    with pytest.raises(transport.VolumeTooLargeError) as err:
        transport.check_browser_memory((900, 512, 512), True, 512 << 20)
    assert isinstance(err.value, InputError)
    assert "server-rendered" in str(err.value) and err.value.needed > err.value.limit


# ---- header ------------------------------------------------------------------------------------


def test_header_is_plain_json_with_shape_spacing_affine_and_plan() -> None:
    vol = _volume()
    geometry = transport.display_geometry(vol)
    plan = transport.chunk_plan(20, 5, 8)
    header = transport.volume_header("study-1", geometry, True, plan)
    assert header["shape"] == [20, 12, 10] and header["dtype"] == "int16"
    assert header["spacing"] == pytest.approx([2.0, 0.6, 0.5])
    assert np.allclose(header["affine"], AXIAL_SPL)
    assert header["plan"][0] == [5, 6] and header["mask"] is True
    frame = transport.pack_frame({"volume": header})
    assert frame[:4] == b"SPV1"
    assert transport.unpack_frame(frame)[0]["volume"] == header


# ---- chunk store -------------------------------------------------------------------------------


def test_chunk_store_prefetches_and_keeps_within_its_budget() -> None:
    made: list[int] = []

    def maker(i: int):
        def make() -> transport.EncodedChunk:
            made.append(i)
            return transport.EncodedChunk((i, i + 1), (transport.EncodedPart("image", "x", 1, b"z" * 100),))
        return make

    store = ChunkStore(max_bytes=250, workers=1)
    store.prefetch(1, maker(1))
    assert store.get(1, maker(1)).range == (1, 2)
    assert made == [1], "a prefetched chunk is not made twice"
    for i in range(2, 6):
        store.get(i, maker(i))
    assert store.nbytes <= 250 and 5 in store and 1 not in store


# ---- boxes -------------------------------------------------------------------------------------


def test_boxes_round_trip_through_display_coordinates() -> None:
    # rows stored towards Anterior and columns towards Right: both flipped for display
    affine = np.array([[0, 0, -0.5, 0], [0, -0.6, 0, 0], [2.0, 0, 0, 0], [0, 0, 0, 1]])
    geometry = transport.display_geometry(_volume((20, 12, 10), affine))
    box = ViewerBox("b1", 4, 7, 1.0, 2.0, 4.5, 6.0)
    (shown,) = to_display([box], geometry, editable=True)
    assert shown["slice"] == 7 and shown["editable"] is True
    assert (shown["x0"], shown["x1"]) == (10 - 4.5, 10 - 1.0)
    assert (shown["y0"], shown["y1"]) == (12 - 6.0, 12 - 2.0)
    ev = event_from_browser({"type": "changed", "id": "b1", "base_version": 4, **{
        k: shown[k] for k in ("slice", "x0", "y0", "x1", "y1")}}, geometry)
    assert ev == BoxEvent("changed", "b1", 4, 7, 1.0, 2.0, 4.5, 6.0)
    assert (ev.width, ev.height) == (3.5, 4.0)
    assert to_display([ViewerBox("m", 1, 7, 0, 0, 1, 1, kind="model")], geometry, True)[0]["editable"] is False


def test_browser_events_are_validated() -> None:
    geometry = transport.display_geometry(_volume())
    good = {"type": "created", "id": "new-1", "base_version": None, "slice": 3,
            "x0": 1, "y0": 1, "x1": 3, "y1": 4}
    assert event_from_browser(good, geometry).type == "created"
    for bad in ({**good, "type": "moved"}, {**good, "id": ""}, {**good, "x0": "nan"},
                {**good, "slice": 99}, {**good, "x1": None}):
        with pytest.raises(InputError):
            event_from_browser(bad, geometry)


def test_a_created_event_carries_its_client_key_and_other_events_do_not() -> None:
    geometry = transport.display_geometry(_volume())
    made = {"type": "created", "id": "new-k", "base_version": None, "slice": 3,
            "x0": 1, "y0": 1, "x1": 3, "y1": 4, "client_key": "new-k"}
    assert event_from_browser(made, geometry).client_key == "new-k"
    assert event_from_browser({**made, "client_key": None}, geometry).client_key is None
    changed = {**made, "type": "changed", "id": "5", "base_version": 1}
    assert event_from_browser(changed, geometry).client_key is None
    for bad in ("", "  ", "k" * 65, 7):
        with pytest.raises(InputError, match="client_key"):
            event_from_browser({**made, "client_key": bad}, geometry)
