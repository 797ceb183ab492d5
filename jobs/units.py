"""What the prepare stage hands the model stage: units, as Arrow columns.

A *unit* is what one model-actor call receives: input rows (*items*) with their windows, and
the model batches planned over those windows where they were cut (the model stage runs them as
given, so batches are planned once). A unit travels as ONE row of :data:`UNIT_SCHEMA`: Ray Data
merges the rows a stage yields into blocks and may slice a large block between two rows, never
inside one, so a row per unit reaches one call whole.

In that row, ``items`` holds one struct per item; the window columns (``window_item`` ...
``feature_shape``) one entry per window of every item, items in order and each item's windows
in order; ``features`` every window's features as one flat float32 list (variable-shaped
tensors in Ray Data columns are fragile, ray-project/ray#54186; 1-D values and explicit
shapes are not), each window's shape in ``feature_shape``; ``batches`` the model calls, as
indices into the window columns. Read back, every window's features are a read-only numpy
view into the block's buffer: nothing is copied.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np
import pyarrow as pa

from speech.asr import Window
from speech.asr.base import Batches
from speech.schema import INPUT_SCHEMA

#: One input row on its way to the model: its input columns, decoded length and error.
ITEM_TYPE = pa.struct([*INPUT_SCHEMA, pa.field("duration_s", pa.float64()), pa.field("error", pa.string())])

UNIT_SCHEMA = pa.schema(
    [
        pa.field("items", pa.list_(ITEM_TYPE), nullable=False),
        # Per window: its item (index into items) and the samples it covers, overlaps, start.
        pa.field("window_item", pa.list_(pa.int32()), nullable=False),
        pa.field("num_samples", pa.list_(pa.int64()), nullable=False),
        pa.field("left", pa.list_(pa.int64()), nullable=False),
        pa.field("right", pa.list_(pa.int64()), nullable=False),
        pa.field("offset", pa.list_(pa.int64()), nullable=False),
        pa.field("feature_shape", pa.list_(pa.list_(pa.int64())), nullable=False),
        # Every window's features, flattened (C order) and concatenated; 64-bit offsets, since a
        # block of long files' chunks can exceed 2**31 values.
        pa.field("features", pa.large_list(pa.float32()), nullable=False),
        # Per model call, in call order: the windows it runs (indices into the window columns).
        pa.field("batches", pa.list_(pa.list_(pa.int32())), nullable=False),
    ]
)


@dataclass
class Item:
    """One input row on its way through prepare -> model (columns of ``ITEM_TYPE``)."""

    id: str
    path: str
    reference: str | None = None
    language: str | None = None
    input_size: int | None = None
    input_mtime: datetime | None = None
    duration_s: float | None = None  # decoded audio, seconds
    error: str | None = None
    windows: list[Window] = field(default_factory=list)  # none for errors and speechless files


@dataclass
class Unit:
    """What one model call receives: items and the model batches over their windows."""

    items: list[Item]
    # Per model call, ``(item, window)`` index pairs (see speech.batching.plan_windows).
    batches: Batches = field(default_factory=list)

    def batches_of(self, items: Sequence[Item]) -> Batches:
        """The planned batches restricted to ``items`` (some of this unit's, by identity),
        renumbered as positions in ``items``; batches left empty are dropped."""
        position = {id(item): p for p, item in enumerate(items)}
        new = {u: position[id(item)] for u, item in enumerate(self.items) if id(item) in position}
        kept = [[(new[u], k) for u, k in batch if u in new] for batch in self.batches]
        return [batch for batch in kept if batch]


def units_table(units: Sequence[Unit]) -> pa.Table:
    """``units`` as rows of :data:`UNIT_SCHEMA` (the features are copied once, into the table)."""
    columns: dict[str, list] = {name: [] for name in UNIT_SCHEMA.names if name != "features"}
    features: list[np.ndarray] = []
    offsets = [0]
    for unit in units:
        windows = [(u, w) for u, item in enumerate(unit.items) for w in item.windows]
        first = np.cumsum([0] + [len(item.windows) for item in unit.items])  # first window of each item
        columns["items"].append([{name: getattr(item, name) for name in ITEM_TYPE.names} for item in unit.items])
        columns["window_item"].append([u for u, _ in windows])
        for name in ("num_samples", "left", "right", "offset"):
            columns[name].append([getattr(w, name) for _, w in windows])
        columns["feature_shape"].append([list(w.features.shape) for _, w in windows])
        columns["batches"].append([[int(first[u]) + k for u, k in batch] for batch in unit.batches])
        flat = [np.asarray(w.features, np.float32).ravel() for _, w in windows]
        features += flat
        offsets.append(offsets[-1] + sum(len(f) for f in flat))
    values = np.concatenate(features) if features else np.zeros(0, np.float32)
    arrays = {name: pa.array(values_, UNIT_SCHEMA.field(name).type) for name, values_ in columns.items()}
    arrays["features"] = pa.LargeListArray.from_arrays(pa.array(offsets, pa.int64()), pa.array(values, pa.float32()))
    return pa.table([arrays[name] for name in UNIT_SCHEMA.names], schema=UNIT_SCHEMA)


def read_units(table: pa.Table) -> list[Unit]:
    """The units of rows of :data:`UNIT_SCHEMA`; window features are views of the table's buffer."""
    table = table.select(UNIT_SCHEMA.names)
    units = []
    for batch in table.to_batches():
        rows = batch.select([name for name in UNIT_SCHEMA.names if name != "features"]).to_pylist()
        features = batch.column("features")
        values = features.values.to_numpy(zero_copy_only=True)  # the whole block's, unsliced
        starts = features.offsets.to_numpy()  # into values, also for a sliced block
        for row, start in zip(rows, starts):
            items = [Item(**fields) for fields in row["items"]]
            cursor = int(start)
            for u, shape, *place in zip(row["window_item"], row["feature_shape"], row["num_samples"], row["left"],
                                         row["right"], row["offset"]):
                size = int(np.prod(shape))
                items[u].windows.append(Window(values[cursor : cursor + size].reshape(shape), *place))
                cursor += size
            pairs = [(u, k) for u, item in enumerate(items) for k in range(len(item.windows))]
            units.append(Unit(items, [[pairs[w] for w in calls] for calls in row["batches"]]))
    return units
