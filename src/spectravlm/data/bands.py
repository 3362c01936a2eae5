"""Which bands the data will deliver, read from the stores: the value linked into a task's ``bands``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from spectravlm.data.store import CubeStore
from spectravlm.errors import DataConfigError, StoreError


def store_bands(
    stores: Sequence[str | Sequence[str]], groups: Sequence[str] | Mapping[str, Sequence[str] | None]
) -> dict[str, list[str]]:
    """Bands per sensor group as the data module will deliver them, read from the first region's stores.

    This is the value the CLI links from ``data.stores`` and ``data.groups`` to ``model.bands``, so bands
    are named once (or not at all: ``groups: [s2, s1]`` means all bands of each group).

    Raises:
        DataConfigError: a group or band the stores do not have.

    """
    if not stores:
        raise DataConfigError("data.stores is empty: name at least one cube store")
    first = stores[0]
    paths = [first] if isinstance(first, str) else list(first)
    opened = [CubeStore.open(p) for p in paths]
    request: dict[str, list[str] | None] = {
        g: None for g in ([groups] if isinstance(groups, str) else groups)
    }
    if isinstance(groups, Mapping):
        request = {g: (None if b is None else list(b)) for g, b in groups.items()}
    out: dict[str, list[str]] = {}
    for g, wanted in request.items():
        holders = [s for s in opened if g in s.groups]
        if not holders:
            have = sorted({x for s in opened for x in s.groups})
            raise DataConfigError(f"{', '.join(paths)} has no sensor group {g!r}; groups: {', '.join(have)}")
        cube = holders[0][g]
        if wanted is None:
            out[g] = list(cube.bands)
            continue
        try:
            cube.band_index(cube.sensor.canonical_names(wanted))
        except StoreError as err:
            raise DataConfigError(str(err)) from err
        out[g] = list(cube.sensor.canonical_names(wanted))
    return out
