"""Chinese: spans found here, numbers turned into Hanzi by cn2an (``an2cn``).

cn2an's own ``transform`` reads dates and percentages but not times, phone numbers,
currency signs, units or thousands separators (``1,234`` becomes 一,二百三十四), so the
spans are found here and only the numbers are handed to ``an2cn``. Also by hand: years
and phone numbers read digit by digit (phone numbers with 幺 for 1, as they are said), 两
for 2 before a measure word, and the names of units and currencies.
"""

from __future__ import annotations

import re

from cn2an import an2cn

from speech.text.normalize.driver import NUMBER, Rules, digits, plain

RULES = Rules(spaced=False)

_DIGITS = "零一二三四五六七八九"
_CURRENCIES = {"¥": "元", "￥": "元", "$": "美元", "€": "欧元", "£": "英镑", "₩": "韩元"}
_UNITS = {
    "km/h": "公里每小时", "km²": "平方公里", "m²": "平方米", "kg": "公斤", "km": "公里", "cm": "厘米", "mm": "毫米",
    "mg": "毫克", "ml": "毫升", "kWh": "千瓦时", "GB": "吉字节", "MB": "兆字节", "°C": "摄氏度", "℃": "摄氏度", "°F": "华氏度",
    "°": "度", "m": "米", "g": "克", "l": "升", "L": "升",
}
# Measure words after which 2 is read 两 (两个人, not 二个人).
_LIANG = "个只条位本张次件天种台辆家份杯瓶碗层岁双对年周月"
_SYMBOLS = {"&": "和", "@": "艾特", "+": "加", "=": "等于", "#": "井号", "%": "百分号", "‰": "千分号", "№": "第",
            "§": "第"}
_WEB = {".": "点", "/": "斜杠", "@": "艾特", ":": "冒号", "-": "杠", "_": "下划线"}


def cardinal(number: str) -> str:
    """``"1,234.5"`` -> 一千二百三十四点五 (cn2an)."""
    return an2cn(plain(number))


def spell(number: str, one: str = "一") -> str:
    """Digit by digit: ``"2024"`` -> 二零二四."""
    return "".join(one if d == 1 else _DIGITS[d] for d in digits(number))


RULES.add_web_addresses(_WEB)


@RULES.add("date", r"(?<![\d.])(?P<y>\d{4})[-./](?P<m>\d{1,2})[-./](?P<d>\d{1,2})(?![\d.])")
def _iso_date(m: re.Match[str]) -> str:
    return f"{spell(m['y'])}年{cardinal(m['m'])}月{cardinal(m['d'])}日"


@RULES.add("date", r"(?<![\d.])(?P<y>\d{4})\s?年")
def _year(m: re.Match[str]) -> str:
    return f"{spell(m['y'])}年"


@RULES.add("time", r"(?<![\d.:])(?P<h>[01]?\d|2[0-3]):(?P<min>[0-5]\d)(?::(?P<s>[0-5]\d))?(?!\d)")
def _clock(m: re.Match[str]) -> str:
    minute = int(m["min"])
    words = f"{cardinal(m['h'])}点" + ("整" if minute == 0 else f"{'零' if minute < 10 else ''}{cardinal(str(minute))}分")
    if m["s"] and int(m["s"]):
        words += f"{cardinal(m['s'])}秒"
    return words


@RULES.add("phone number", r"(?<![\d.])(?:\+\d{1,3}[ -]?)?(?:1[3-9]\d{9}|\d{3,4}-\d{7,8}|\d{3}-\d{4}-\d{4})(?![\d.])")
def _phone(m: re.Match[str]) -> str:
    return " ".join(spell(group, one="幺") for group in re.findall(r"\d+", m.group(0)))


@RULES.add("range", r"(?<=\d)\s?[~～-]\s?(?=[$€£¥￥₩]?\d)")
def _range(m: re.Match[str]) -> str:
    return "到"


@RULES.add("fraction", r"(?<![\d.])(?P<a>\d+)/(?P<b>\d+)(?![\d.])")
def _fraction(m: re.Match[str]) -> str:
    return f"{cardinal(m['b'])}分之{cardinal(m['a'])}"


@RULES.add("currency", rf"(?P<sym>[¥￥$€£₩])\s?(?P<n>{NUMBER})\s?(?P<unit>[万亿]?)(?:元|块)?")
def _currency(m: re.Match[str]) -> str:
    return f"{cardinal(m['n'])}{m['unit']}{_CURRENCIES[m['sym']]}"


@RULES.add("percentage", rf"(?P<n>-?(?:{NUMBER}))\s?(?P<sign>[%‰])")
def _percent(m: re.Match[str]) -> str:
    return f"{'百分之' if m['sign'] == '%' else '千分之'}{cardinal(m['n'])}"


_UNIT = "|".join(re.escape(u) for u in sorted(_UNITS, key=len, reverse=True))


@RULES.add("measure", rf"(?P<n>-?(?:{NUMBER}))\s?(?P<unit>{_UNIT})(?![a-zA-Z²])")
def _measure(m: re.Match[str]) -> str:
    number, unit = m["n"], m["unit"]
    if number.startswith("-") and unit in ("°C", "℃", "°", "°F"):
        return f"零下{cardinal(number[1:])}{_UNITS[unit]}"
    return f"{cardinal(number)}{_UNITS[unit]}"


@RULES.add("number", rf"(?<![\d.])2(?=[{_LIANG}]|公斤|公里|小时|分钟)")
def _liang(m: re.Match[str]) -> str:
    return "两"


@RULES.add("number", rf"(?<![\d.])(?P<n>-?(?:{NUMBER}))|(?P<digits>\d+)")
def _number(m: re.Match[str]) -> str:
    number = m["n"] or m["digits"]
    if len(number) > 1 and number[0] == "0" and "." not in number:
        return spell(number)  # an identifier: "007"
    return cardinal(number)


RULES.add_words("symbol", _SYMBOLS)
