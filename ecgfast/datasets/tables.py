"""Text tables (CSV, whitespace-separated) and spreadsheets, every failure an ECGDataError.

:func:`read_numeric` parses a numeric text table with numpy's C parser (a recording of
millions of rows in seconds); :func:`read_rows` returns a spreadsheet's (``.xlsx`` via
openpyxl) or a CSV export's rows as a header and value tuples.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np

from ecgfast.data import ECGDataError
from ecgfast.data.readers import _is_number

_DELIMITERS = (",", ";", "\t")


def _text(path: Path) -> str:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ECGDataError(f"{path}: file not found") from None
    except OSError as exc:
        raise ECGDataError(f"{path}: cannot read: {exc}") from None
    if b"\x00" in data[:65536]:
        raise ECGDataError(f"{path}: a binary file, expected text")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def _head(path: Path, n: int = 1 << 16) -> list[str]:
    """The complete lines among the first ``n`` bytes of a text file."""
    try:
        with open(path, "rb") as f:
            data = f.read(n)
            complete = not f.read(1)
    except FileNotFoundError:
        raise ECGDataError(f"{path}: file not found") from None
    except OSError as exc:
        raise ECGDataError(f"{path}: cannot read: {exc}") from None
    if b"\x00" in data:
        raise ECGDataError(f"{path}: a binary file, expected text")
    lines = data.decode("utf-8-sig", errors="replace").splitlines()
    return lines if complete else lines[:-1]


def read_numeric(path: Path, *, columns=None) -> tuple[list[str] | None, np.ndarray]:
    """A numeric text table: (header or None, (n_rows, n_columns) float64).

    Lines before the first all-numeric line are header lines (the last of them names the
    columns). The delimiter is the first of ``,`` ``;`` tab found in the first data line,
    else whitespace. ``columns`` (names) selects and orders columns (only those are
    parsed); each must exist.
    """
    path = Path(path)
    lines = _head(path)
    first = None
    for i, line in enumerate(lines):
        fields = _split(line, _delimiter(line))
        if fields and all(_is_number(f) for f in fields):
            first = i
            break
    if first is None:
        raise ECGDataError(f"{path}: no numeric rows (empty or not a numeric table)")
    delimiter = _delimiter(lines[first])
    width = len(_split(lines[first], delimiter))
    header = _split(lines[first - 1], delimiter) if first > 0 else None
    index = None
    if columns is not None:
        if header is None:
            raise ECGDataError(f"{path}: no header row naming the columns {list(columns)}")
        if len(header) != width:
            raise ECGDataError(f"{path}: the header has {len(header)} names but the rows have "
                               f"{width} values")
        names = [h.strip().lower() for h in header]
        missing = [c for c in columns if c.lower() not in names]
        if missing:
            raise ECGDataError(f"{path}: no column(s) {missing}; header: {header}")
        index = [names.index(c.lower()) for c in columns]
        header = [header[i] for i in index]
    try:
        table = np.loadtxt(path, delimiter=delimiter, dtype=np.float64, ndmin=2,
                           skiprows=first, usecols=index, encoding="utf-8-sig")
    except (ValueError, IndexError) as exc:
        raise ECGDataError(f"{path}: not a numeric table (after line {first}): {exc}") from None
    except MemoryError:
        raise ECGDataError(f"{path}: too large to read into memory") from None
    if table.size == 0:
        raise ECGDataError(f"{path}: no numeric rows")
    return header, table


def _delimiter(line: str) -> str | None:
    return next((d for d in _DELIMITERS if d in line), None)


def _split(line: str, delimiter: str | None) -> list[str]:
    if delimiter is None:
        return line.split()
    return [f.strip() for f in line.split(delimiter)]


def read_rows(path: Path, sheet: str | None = None) -> tuple[list[str], list[tuple]]:
    """(header, rows) of a spreadsheet: ``.xlsx`` (sheet ``sheet`` when present, else the
    first) or a CSV/TSV export. Cells are numbers, strings or None."""
    path = Path(path)
    if not path.is_file():
        raise ECGDataError(f"{path}: file not found")
    rows = _xlsx_rows(path, sheet) if path.suffix.lower() == ".xlsx" else _csv_rows(path)
    rows = [r for r in rows if r is not None and any(v not in (None, "") for v in r)]
    if not rows:
        raise ECGDataError(f"{path}: empty table")
    header = ["" if v is None else str(v).strip() for v in rows[0]]
    return header, [tuple(r) for r in rows[1:]]


def _xlsx_rows(path: Path, sheet: str | None) -> list:
    try:
        import openpyxl
    except ImportError:
        raise ImportError(
            f"{path}: reading .xlsx needs the 'openpyxl' package: pip install openpyxl (or "
            "ecgfast[datasets]), or pass a CSV export of the sheet instead"
        ) from None
    try:
        book = openpyxl.load_workbook(path, read_only=True, data_only=True)
        try:
            named = sheet is not None and sheet in book.sheetnames
            ws = book[sheet] if named else book.worksheets[0]
            return [tuple(r) for r in ws.iter_rows(values_only=True)]
        finally:
            book.close()
    except MemoryError:
        raise ECGDataError(f"{path}: asks for more memory than is available (corrupt?)") from None
    except Exception as exc:  # noqa: BLE001 - openpyxl/zipfile/XML raise many types
        raise ECGDataError(f"{path}: not a readable .xlsx workbook: {type(exc).__name__}: "
                           f"{exc}") from None


def _csv_rows(path: Path) -> list:
    text = _text(path)
    first = next((line for line in text.splitlines() if line.strip()), "")
    delimiter = _delimiter(first) or ","
    try:
        raw = list(csv.reader(io.StringIO(text), delimiter=delimiter))
    except csv.Error as exc:
        raise ECGDataError(f"{path}: not a readable CSV file: {exc}") from None
    return [tuple(_cell(v) for v in r) for r in raw]


def _cell(text: str):
    text = text.strip()
    if text == "":
        return None
    try:
        return float(text)
    except ValueError:
        return text
