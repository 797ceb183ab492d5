"""English: spans found here, numbers read by num2words (cardinals, ordinals, years, currency).

Written by hand, because num2words has no such thing: which span is a date, a time, a phone
number or a unit; month, unit and abbreviation names; decimals read digit by digit after
"point" (num2words drops trailing zeros: 12.50 would be "twelve point five").
Numeric dates are read month first (``3/5/2024`` is March fifth), as in the US.
"""

from __future__ import annotations

import re
from decimal import Decimal

from num2words import num2words
from num2words.lang_EN import Num2Word_EN

from speech.text.normalize.driver import NUMBER, Rules, digits, plain

RULES = Rules()

MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
          "November", "December"]
_MONTH = (r"(?P<month>Jan(?:uary)?|Feb(?:ruary)?|Mar(?:ch)?|Apr(?:il)?|May|June?|July?|Aug(?:ust)?|Sept?(?:ember)?"
          r"|Oct(?:ober)?|Nov(?:ember)?|Dec(?:ember)?)\.?")
_CURRENCIES = {"$": "USD", "€": "EUR", "£": "GBP", "¥": "JPY", "₩": "KRW", "₹": "INR"}
# Names num2words does not have (its English currency table lacks the yen and the won).
_CURRENCY_NAMES = {"JPY": ("yen", "yen"), "KRW": ("won", "won")}
_UNITS = {
    "km/h": "kilometers per hour", "mph": "miles per hour", "m/s": "meters per second", "km²": "square kilometers",
    "m²": "square meters", "kg": "kilograms", "km": "kilometers", "cm": "centimeters", "mm": "millimeters",
    "mg": "milligrams", "ml": "milliliters", "kWh": "kilowatt hours", "kW": "kilowatts", "GB": "gigabytes",
    "MB": "megabytes", "KB": "kilobytes", "TB": "terabytes", "GHz": "gigahertz", "MHz": "megahertz", "kHz": "kilohertz",
    "Hz": "hertz", "lbs": "pounds", "lb": "pounds", "oz": "ounces", "ft": "feet", "mi": "miles",
    "°C": "degrees Celsius", "℃": "degrees Celsius", "°F": "degrees Fahrenheit", "℉": "degrees Fahrenheit",
    "°": "degrees", "m": "meters", "g": "grams", "l": "liters", "L": "liters",
}
_SINGULAR = {"feet": "foot", "inches": "inch", "degrees Celsius": "degree Celsius", "degrees Fahrenheit": "degree Fahrenheit",
             "kilowatt hours": "kilowatt hour"}
_ABBREVIATIONS = {
    "Mr.": "Mister", "Mrs.": "Missus", "Ms.": "Miss", "Dr.": "Doctor", "Prof.": "Professor", "Jr.": "Junior",
    "Sr.": "Senior", "St.": "Saint", "Mt.": "Mount", "Ave.": "Avenue", "vs.": "versus", "etc.": "et cetera",
    "e.g.": "for example", "i.e.": "that is", "approx.": "approximately", "Co.": "Company",
    "Inc.": "Incorporated", "Ltd.": "Limited", "Dept.": "Department", "Fig.": "Figure", "Vol.": "Volume",
}
_SYMBOLS = {"&": "and", "@": "at", "+": "plus", "=": "equals", "#": "number", "%": "percent", "§": "section",
            "№": "number", "‰": "per mille"}
_WEB = {".": "dot", "/": "slash", "@": "at", ":": "colon", "-": "dash", "_": "underscore"}


def cardinal(number: str) -> str:
    """``"1,234"`` -> "one thousand two hundred and thirty-four"; decimals read digit by digit after "point"."""
    whole, _, fraction = plain(number).partition(".")
    words = _words(num2words(int(whole), lang="en"))
    if fraction:
        words += " point " + spell_digits(fraction)
    return words


def spell_digits(text: str) -> str:
    """Each digit of ``text`` by its name: ``"0042"`` -> "zero zero four two"."""
    return " ".join(num2words(d, lang="en") for d in digits(text))


def ordinal(number: int) -> str:
    return _words(num2words(number, lang="en", to="ordinal"))


def year(number: int) -> str:
    return _words(num2words(number, lang="en", to="year"))


def _words(spelled: str) -> str:
    """num2words' spelling as spoken: no commas (pauses) and no hyphens ("forty two"), which
    some front ends drop, gluing the words together (ChatTTS's normalizer does)."""
    return spelled.replace(",", "").replace("-", " ")


def _amount(number: str, code: str) -> str:
    value = Decimal(plain(number))
    names = Num2Word_EN.CURRENCY_FORMS.get(code, (_CURRENCY_NAMES.get(code, (code, code)),))[0]
    if value == value.to_integral() or code not in Num2Word_EN.CURRENCY_FORMS:
        return f"{cardinal(number)} {names[0] if value == 1 else names[1]}"
    return _words(num2words(value, lang="en", to="currency", currency=code))


RULES.add_web_addresses(_WEB)


@RULES.add("date", r"\b(?P<y>\d{4})-(?P<m>\d{2})-(?P<d>\d{2})\b")
def _iso_date(m: re.Match[str]) -> str:
    return f"{MONTHS[int(m['m']) - 1]} {ordinal(int(m['d']))} {year(int(m['y']))}"


@RULES.add("date", r"\b(?P<m>1[0-2]|0?[1-9])/(?P<d>3[01]|[12]\d|0?[1-9])/(?P<y>\d{4})\b")
def _numeric_date(m: re.Match[str]) -> str:
    return f"{MONTHS[int(m['m']) - 1]} {ordinal(int(m['d']))} {year(int(m['y']))}"


@RULES.add("date", rf"\b{_MONTH}\s+(?P<d>\d{{1,2}})(?:st|nd|rd|th)?\b(?:,?\s+(?P<y>\d{{4}})\b)?")
def _month_day(m: re.Match[str]) -> str:
    month = next(name for name in MONTHS if name.lower().startswith(m["month"].lower()[:3]))
    return f"{month} {ordinal(int(m['d']))}" + (f" {year(int(m['y']))}" if m["y"] else "")


@RULES.add("date", rf"\b(?P<d>\d{{1,2}})(?:st|nd|rd|th)?\s+{_MONTH}(?:,?\s+(?P<y>\d{{4}})\b)?")
def _day_month(m: re.Match[str]) -> str:
    month = next(name for name in MONTHS if name.lower().startswith(m["month"].lower()[:3]))
    return f"the {ordinal(int(m['d']))} of {month}" + (f" {year(int(m['y']))}" if m["y"] else "")


@RULES.add("time", r"\b(?P<h>[01]?\d|2[0-3]):(?P<min>[0-5]\d)(?::(?P<s>[0-5]\d))?(?:\s*(?P<ampm>[ap])\.?m\.?\b)?", re.IGNORECASE)
def _time(m: re.Match[str]) -> str:
    hour, minute = int(m["h"]), int(m["min"])
    if minute == 0:
        words = f"{cardinal(m['h'])}" + ("" if m["ampm"] else " o'clock")
    else:
        words = f"{cardinal(m['h'])} {'oh ' if minute < 10 else ''}{cardinal(str(minute))}"
    if m["s"]:
        words += f" and {cardinal(m['s'])} seconds"
    if m["ampm"]:
        words += f" {m['ampm'].lower()} m"
    return words if hour or minute or m["ampm"] else "midnight"


@RULES.add("phone number", r"(?<![\w.])(?:\+\d{1,3}[ -]?)?(?:\(\d{2,4}\)\s?|\d{2,4}[-. ])\d{3,4}[-. ]\d{4}\b|\b\d{3}-\d{4}\b")
def _phone(m: re.Match[str]) -> str:
    groups = re.findall(r"\d+", m.group(0))
    return ", ".join(spell_digits(group) for group in groups)


@RULES.add("range", r"(?<=\d)\s?[-–~]\s?(?=[$€£¥₩₹]?\d)")
def _range(m: re.Match[str]) -> str:
    return "to"


@RULES.add("ordinal", r"\b(?P<n>\d+)(?:st|nd|rd|th)\b")
def _ordinal(m: re.Match[str]) -> str:
    return ordinal(int(m["n"]))


@RULES.add("decade", r"\b(?P<n>1[0-9]|20)(?P<d>[0-9]0)'?s\b")
def _decade(m: re.Match[str]) -> str:
    words = year(int(m["n"] + m["d"]))
    return words[:-1] + "ies" if words.endswith("y") else words + "s"


@RULES.add("currency", rf"(?P<sym>[$€£¥₩₹])\s?(?P<n>{NUMBER})(?:\s?(?P<scale>thousand|million|billion|trillion|[kKmMbB]n?)\b)?")
def _currency(m: re.Match[str]) -> str:
    code = _CURRENCIES[m["sym"]]
    if not m["scale"]:
        return _amount(m["n"], code)
    scale = {"k": "thousand", "m": "million", "b": "billion", "bn": "billion"}.get(m["scale"].lower(), m["scale"])
    names = Num2Word_EN.CURRENCY_FORMS.get(code, (_CURRENCY_NAMES.get(code, (code, code)),))[0]
    return f"{cardinal(m['n'])} {scale} {names[1]}"


@RULES.add("percentage", rf"(?P<n>-?(?:{NUMBER}))\s?(?P<sign>[%‰])")
def _percent(m: re.Match[str]) -> str:
    number = m["n"]
    sign = "minus " if number.startswith("-") else ""
    return f"{sign}{cardinal(number.lstrip('-'))} {_SYMBOLS[m['sign']]}"


_UNIT = "|".join(re.escape(u) for u in sorted(_UNITS, key=len, reverse=True))


@RULES.add("measure", rf"(?P<n>-?(?:{NUMBER}))\s?(?P<unit>{_UNIT})(?![\w²])")
def _measure(m: re.Match[str]) -> str:
    number = m["n"]
    unit = _UNITS[m["unit"]]
    if plain(number.lstrip("-")) == "1":
        unit = _SINGULAR.get(unit, unit.removesuffix("s"))
    sign = "minus " if number.startswith("-") else ""
    return f"{sign}{cardinal(number.lstrip('-'))} {unit}"


@RULES.add("year", r"\b(?P<w>in|since|by|from|until|till|of|year|around|before|after|during|circa)"
                   r"\s+(?P<n>1[1-9]\d\d|20\d\d)\b(?!,\d)", re.IGNORECASE)
def _year(m: re.Match[str]) -> str:
    return f"{m['w']} {year(int(m['n']))}"


@RULES.add("abbreviation", r"\bNo\.(?=\s?\d)")
def _number_sign(m: re.Match[str]) -> str:
    return "number"


@RULES.add("abbreviation", "|".join(rf"(?<![\w.]){re.escape(a)}" for a in _ABBREVIATIONS))
def _abbreviation(m: re.Match[str]) -> str:
    return _ABBREVIATIONS[m.group(0)]


@RULES.add("number", rf"(?<![\w.])(?P<sign>[-−])?(?P<n>{NUMBER})")
def _number(m: re.Match[str]) -> str:
    number = m["n"]
    # "007", "0042": an identifier, read digit by digit.
    words = spell_digits(number) if len(number) > 1 and number[0] == "0" and "." not in number else cardinal(number)
    return f"minus {words}" if m["sign"] else words


@RULES.add("number", r"\d+")
def _digits_in_words(m: re.Match[str]) -> str:
    # Digits glued to letters ("MP3", "A4", "COVID19"): read as a number.
    return cardinal(m.group(0))


RULES.add_words("symbol", _SYMBOLS)
