"""The prepare -> model hand-over (jobs/units.py): units survive Arrow, features come back as views."""

from datetime import UTC, datetime

import numpy as np
import pyarrow as pa

from jobs.units import UNIT_SCHEMA, Item, Unit, read_units, units_table
from speech.asr import Window

MTIME = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)


def _units() -> list[Unit]:
    rng = np.random.default_rng(0)
    wave = lambda n: rng.standard_normal(n).astype(np.float32)  # noqa: E731 - a one-line factory
    short = Item("a", "/a.wav", "ref a", "en", 10, MTIME, 0.5, windows=[Window(wave(8000), 8000)])
    longer = Item("b", "/b.flac", windows=[Window(wave(9000), 9000)], duration_s=0.6)
    chunked = Item("c", "s3://x/c.mp3", language="ko", duration_s=2.0, windows=[
        Window(wave(16000), 16000, 0, 1600, 0), Window(wave(16000), 16000, 1600, 1600, 12800),
        Window(wave(9600), 9600, 1600, 0, 25600),
    ])
    mel = Item("d", "/d.wav", windows=[Window(rng.standard_normal((80, 3000)).astype(np.float32), 48000, offset=3)])
    failed = Item("e", "/e.wav", error="file not found: /e.wav")
    speechless = Item("f", "/f.wav", duration_s=1.0)
    return [
        Unit([short, longer], [[(0, 0), (1, 0)]]),
        Unit([chunked], [[(0, 2), (0, 0)], [(0, 1)]]),
        Unit([mel]),  # a unit may have no batches yet, as the dataclass allows
        Unit([failed, speechless]),
    ]


def _assert_same(got: list[Unit], want: list[Unit]) -> None:
    assert len(got) == len(want)
    for unit, expected in zip(got, want):
        assert unit.batches == expected.batches
        assert len(unit.items) == len(expected.items)
        for item, original in zip(unit.items, expected.items):
            fields = lambda i: {k: v for k, v in vars(i).items() if k != "windows"}  # noqa: E731
            assert fields(item) == fields(original)
            assert len(item.windows) == len(original.windows)
            for window, source in zip(item.windows, original.windows):
                assert (window.num_samples, window.left, window.right, window.offset) == (
                    source.num_samples, source.left, source.right, source.offset)
                assert window.features.dtype == np.float32 and window.features.shape == source.features.shape
                np.testing.assert_array_equal(window.features, source.features)


def test_units_round_trip_through_arrow_columns():
    units = _units()
    table = units_table(units)
    assert table.schema == UNIT_SCHEMA and table.num_rows == len(units)
    assert table["batches"].to_pylist()[1] == [[2, 0], [1]]  # window indices within the unit
    _assert_same(read_units(table), units)


def test_features_come_back_as_views_of_the_arrow_buffer():
    table = units_table(_units())
    buffer = table["features"].chunk(0).values.buffers()[1]
    start, end = buffer.address, buffer.address + buffer.size
    for unit in read_units(table):
        for item in unit.items:
            for window in item.windows:
                assert not window.features.flags.owndata and not window.features.flags.writeable
                assert start <= window.features.__array_interface__["data"][0] < end


def test_units_read_back_from_ipc_slices_and_many_chunks():
    units = _units()
    # As Ray moves blocks (Arrow IPC), from a slice, and from a table of several blocks.
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, UNIT_SCHEMA) as writer:
        writer.write_table(units_table(units))
    received = pa.ipc.open_stream(sink.getvalue()).read_all()
    _assert_same(read_units(received), units)
    _assert_same(read_units(units_table(units).slice(1, 2)), units[1:3])
    merged = pa.concat_tables([units_table(units[:2]), units_table(units[2:])])
    assert merged["features"].num_chunks == 2
    _assert_same(read_units(merged), units)


def test_batches_of_some_items_keeps_their_planned_calls():
    a, b, c = Item("a", "a"), Item("b", "b"), Item("c", "c")
    unit = Unit([a, b, c], [[(0, 0), (2, 0)], [(1, 0), (1, 1)], [(2, 1)]])
    assert unit.batches_of([c, a]) == [[(1, 0), (0, 0)], [(0, 1)]]
    assert unit.batches_of([b]) == [[(0, 0), (0, 1)]]
    assert unit.batches_of([]) == []
