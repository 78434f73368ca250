"""The error raised for bad ECG data or arguments in :mod:`ecgfast.data`."""

from __future__ import annotations


class ECGDataError(ValueError):
    """Bad ECG input: a missing or malformed file, NaN/Inf samples, a wrong shape or rate.

    A ``ValueError``, so ``except ValueError`` catches it too. The message always names
    the file (or the argument) and says what is wrong.
    """
