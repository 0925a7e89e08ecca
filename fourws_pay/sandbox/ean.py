"""EAN-13 check digits, for generated gift-card and product barcodes.

Kept dependency-free so the CLI (``barcodes import``) can validate files with it.
"""

from __future__ import annotations


def ean13_check_digit(first12: str) -> str:
    """The 13th digit of an EAN-13 whose first twelve digits are ``first12``.

    Weights alternate 1, 3 from the left; the check digit brings the sum to a multiple of 10.
    """
    if len(first12) != 12 or not first12.isdigit() or not first12.isascii():
        raise ValueError("an EAN-13 body is exactly 12 ASCII digits")
    total = sum(int(d) * (3 if i % 2 else 1) for i, d in enumerate(first12))
    return str((10 - total % 10) % 10)


def is_valid_ean13(barcode: str) -> bool:
    """True for 13 ASCII digits whose last one is the right check digit."""
    if not isinstance(barcode, str) or len(barcode) != 13:
        return False
    if not barcode.isdigit() or not barcode.isascii():
        return False
    return ean13_check_digit(barcode[:12]) == barcode[12]


def make_ean13(prefix: str, number: int) -> str:
    """A valid EAN-13 made of ``prefix``, ``number`` zero-padded to fill 12 digits, and the
    check digit. Raises ``ValueError`` when the number does not fit."""
    width = 12 - len(prefix)
    body = f"{prefix}{number:0{width}d}"
    if len(body) != 12:
        raise ValueError(f"{number} does not fit after prefix {prefix!r}")
    return body + ean13_check_digit(body)


__all__ = ["ean13_check_digit", "is_valid_ean13", "make_ean13"]
