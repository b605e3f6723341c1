"""Calendar dates written the ways forms and records write them (for dates of birth)."""

from __future__ import annotations

import datetime
import re

_MONTHS = {
    name: i + 1
    for i, names in enumerate((
        ("jan", "january", "janvier", "januar", "enero"),
        ("feb", "february", "février", "fevrier", "februar", "febrero"),
        ("mar", "march", "mars", "märz", "marz", "marzo"), ("apr", "april", "avril", "abril"),
        ("may", "mai", "mayo"), ("jun", "june", "juin", "juni", "junio"), ("jul", "july", "juillet", "juli", "julio"),
        ("aug", "august", "août", "aout", "agosto"), ("sep", "sept", "september", "septembre", "septiembre"),
        ("oct", "october", "octobre", "oktober", "octubre"), ("nov", "november", "novembre", "noviembre"),
        ("dec", "december", "décembre", "decembre", "dezember", "diciembre"),
    ))
    for name in names
}
_NUMERIC = re.compile(r"(\d{1,4})[-/.](\d{1,2})[-/.](\d{1,4})")
_WORDY = re.compile(r"(\d{1,2})?(?:st|nd|rd|th)?\.?\s*([^\W\d_]+)\.?\s*(\d{1,2})?(?:st|nd|rd|th)?,?\s*(\d{4})")
_CJK = re.compile(r"(\d{4})年(\d{1,2})月(\d{1,2})日")


def _ok(year: int, month: int, day: int) -> bool:
    try:
        when = datetime.date(year, month, day)
    except ValueError:
        return False
    return year >= 1900 and when <= datetime.date.today()


def date_of_birth(text: str) -> bool:
    """Some reading of ``text`` (ISO, day-first, month-first, named month, CJK) is a past date after 1900."""
    value = text.strip().lower()
    if m := _CJK.fullmatch(value):
        return _ok(int(m[1]), int(m[2]), int(m[3]))
    if m := _NUMERIC.fullmatch(value):
        a, b, c = (int(x) for x in m.groups())
        if len(m[1]) == 4:
            return _ok(a, b, c)
        if len(m[3]) != 4:
            return False
        return _ok(c, b, a) or _ok(c, a, b)
    if m := _WORDY.fullmatch(value):
        month = _MONTHS.get(m[2])
        day = m[1] or m[3]
        return month is not None and day is not None and _ok(int(m[4]), month, int(day))
    return False
