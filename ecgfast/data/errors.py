"""The error raised for bad ECG data or arguments in :mod:`ecgfast.data`."""

from __future__ import annotations


class ECGDataError(ValueError):
    """Bad ECG input: a missing or malformed file, NaN/Inf samples, a wrong shape or rate.

    A ``ValueError``, so ``except ValueError`` catches it too. The message always names
    the file (or the argument) and says what is wrong.
    """


def check_format(record, fmt: str, version, where, what: str, advice: str = "") -> dict:
    """``record`` (the parsed JSON header of a file ecgfast wrote) when it says
    ``{"format": fmt, "version": version}``; otherwise an ECGDataError naming ``where``:
    not an ecgfast ``what`` at all, or another version of it (``advice`` says what to do)."""
    if not isinstance(record, dict) or record.get("format") != fmt:
        raise ECGDataError(f"{where}: not an ecgfast {what} (format {fmt!r})")
    if record.get("version") != version:
        raise ECGDataError(f"{where}: {what} format version {record.get('version')!r}; this "
                           f"ecgfast reads version {version}{advice}")
    return record
