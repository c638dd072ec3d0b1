"""Struct-of-arrays tables that grow by doubling: one numpy column per field, no object per row."""

from __future__ import annotations

import numpy as np


class Columns:
    """Named numpy columns of equal length that grow by appending batches.

    >>> table = Columns({"start": (np.float64, ()), "path": (np.int32, (4,))})
    >>> rows = table.append(start=np.array([0.5, 1.0]), path=np.zeros((2, 4), np.int32))
    >>> rows, len(table), table["start"].tolist()
    (range(0, 2), 2, [0.5, 1.0])
    """

    def __init__(self, fields: dict[str, tuple[type, tuple[int, ...]]], capacity: int = 1024) -> None:
        self._fields = fields
        self._data = {
            name: np.zeros((capacity, *shape), dtype=dtype) for name, (dtype, shape) in fields.items()
        }
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def __getitem__(self, name: str) -> np.ndarray:
        """The live rows of column ``name`` (a view: writes go to the table)."""
        return self._data[name][: self._size]

    def append(self, **columns: np.ndarray) -> range:
        """Append rows; every field must be given with the same length. Returns the new row ids."""
        n = len(next(iter(columns.values())))
        need = self._size + n
        capacity = self._data[next(iter(self._fields))].shape[0]
        if need > capacity:
            capacity = max(need, 2 * capacity)
            for name, old in self._data.items():
                grown = np.zeros((capacity, *old.shape[1:]), dtype=old.dtype)
                grown[: self._size] = old[: self._size]
                self._data[name] = grown
        for name in self._fields:
            self._data[name][self._size : need] = columns[name]
        rows = range(self._size, need)
        self._size = need
        return rows
