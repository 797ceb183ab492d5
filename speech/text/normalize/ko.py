"""Korean: spans found here, Sino-Korean numbers read by num2words (``lang="ko"``).

Korean counts with two number systems: Sino-Korean (일, 이, 삼: dates, minutes, money,
measures, phone numbers) and native Korean (하나, 둘, 셋: hours, ages and most counters of
things, which take the short forms 한, 두, 세, 네, 스무). num2words reads Sino-Korean; its
Korean ordinal fails for 0, 100 and 1000 and reads 20 as 스물 where a counter needs 스무, so
native numbers (which only exist from 1 to 99; from 100 on, counters take Sino-Korean
numbers) are the small hand-written table below. Also by hand: which counter takes which
system, the months 유월 and 시월, and 공 for 0 in phone numbers.
"""

from __future__ import annotations

import re
from decimal import Decimal

from num2words import num2words
from num2words.lang_KO import Num2Word_KO

from speech.text.normalize.driver import NUMBER, Rules, digits, plain

RULES = Rules(spaced=False)  # particles attach to the reading: 세 개에

_NATIVE_ONES = ["", "한", "두", "세", "네", "다섯", "여섯", "일곱", "여덟", "아홉"]  # before a counter
_NATIVE_TENS = ["", "열", "스물", "서른", "마흔", "쉰", "예순", "일흔", "여든", "아흔"]
_SINO_DIGITS = "영일이삼사오육칠팔구"
#: Counters that take native numbers (g2pk's list, the usual one).
_NATIVE_COUNTERS = ("개", "명", "마리", "살", "시간", "잔", "권", "장", "병", "대", "번", "그루", "송이", "켤레", "벌",
                    "채", "곳", "가지", "군데", "달", "사람", "척", "자루", "줄", "쌍", "통", "판", "박스", "봉지", "알")
_CURRENCIES = {"$": "USD", "€": "EUR", "£": "GBP", "¥": "JPY", "₩": "KRW"}
_CURRENCY_WORDS = {"원": "KRW", "달러": "USD", "엔": "JPY", "유로": "EUR", "파운드": "GBP", "위안": "CNY"}
_CURRENCY_NAMES = {"USD": "달러", "EUR": "유로", "GBP": "파운드", "JPY": "엔", "KRW": "원", "CNY": "위안"}
_UNITS = {
    "km/h": "킬로미터 퍼 아워", "km²": "제곱킬로미터", "m²": "제곱미터", "kg": "킬로그램", "km": "킬로미터", "cm": "센티미터",
    "mm": "밀리미터", "mg": "밀리그램", "ml": "밀리리터", "kWh": "킬로와트시", "GB": "기가바이트", "MB": "메가바이트",
    "°C": "도", "℃": "도", "°F": "화씨 도", "°": "도", "m": "미터", "g": "그램", "l": "리터", "L": "리터",
}
_SYMBOLS = {"&": "앤드", "@": "골뱅이", "+": "플러스", "=": "은", "#": "샵", "%": "퍼센트", "‰": "퍼밀", "№": "넘버",
            "§": "조"}
_WEB = {".": "닷", "/": "슬래시", "@": "골뱅이", ":": "콜론", "-": "대시", "_": "언더바"}


def sino(number: str) -> str:
    """Sino-Korean: ``"12,500"`` -> "만 이천오백"; decimals read digit by digit after 점."""
    whole, _, fraction = plain(number).partition(".")
    words = num2words(int(whole), lang="ko")
    if fraction:
        words += " 점 " + "".join(_SINO_DIGITS[d] for d in digits(fraction))
    return words


def native(number: int) -> str:
    """Native Korean as it stands before a counter (``3`` -> 세, ``20`` -> 스무); Sino-Korean from 100."""
    if not 0 < number < 100:
        return sino(str(number))
    tens, ones = divmod(number, 10)
    if number == 20:
        return "스무"
    return _NATIVE_TENS[tens] + _NATIVE_ONES[ones]


def _amount(number: str, code: str) -> str:
    value = Decimal(plain(number))
    if value != value.to_integral() and code in Num2Word_KO.CURRENCY_FORMS and Num2Word_KO.CURRENCY_FORMS[code][1]:
        return num2words(value, lang="ko", to="currency", currency=code)  # 십이달러 오십센트
    return f"{sino(number)} {_CURRENCY_NAMES[code]}"


def _month(number: int) -> str:
    return {6: "유월", 10: "시월"}.get(number, f"{sino(str(number))}월")


RULES.add_web_addresses(_WEB)


@RULES.add("date", r"(?<![\d.])(?P<y>\d{4})[-./](?P<m>\d{1,2})[-./](?P<d>\d{1,2})(?![\d.])")
def _iso_date(m: re.Match[str]) -> str:
    return f"{sino(m['y'])}년 {_month(int(m['m']))} {sino(m['d'])}일"


@RULES.add("date", r"(?<![\d.])(?P<n>\d{1,4})\s?년")
def _year(m: re.Match[str]) -> str:
    return f"{sino(m['n'])}년"


@RULES.add("date", r"(?<![\d.])(?P<n>1[0-2]|0?[1-9])\s?월")
def _month_name(m: re.Match[str]) -> str:
    return _month(int(m["n"]))


@RULES.add("date", r"(?<![\d.])(?P<n>3[01]|[12]\d|0?[1-9])\s?일(?!곱)")
def _day(m: re.Match[str]) -> str:
    return f"{sino(m['n'])}일"


@RULES.add("time", r"(?<![\d.:])(?P<h>[01]?\d|2[0-3]):(?P<min>[0-5]\d)(?::(?P<s>[0-5]\d))?(?!\d)")
def _clock(m: re.Match[str]) -> str:
    words = f"{native(int(m['h'])) if int(m['h']) else '영'} 시"
    if int(m["min"]):
        words += f" {sino(m['min'])} 분"
    if m["s"] and int(m["s"]):
        words += f" {sino(m['s'])} 초"
    return words


@RULES.add("time", r"(?<![\d.])(?P<h>[01]?\d|2[0-4])\s?시(?!간)")
def _hour(m: re.Match[str]) -> str:
    return f"{native(int(m['h'])) if int(m['h']) else '영'} 시"


@RULES.add("time", r"(?<![\d.])(?P<n>\d+)\s?(?P<unit>분|초)")
def _minutes(m: re.Match[str]) -> str:
    return f"{sino(m['n'])} {m['unit']}"


@RULES.add("phone number", r"(?<![\d.])(?:\+\d{1,3}[ -]?)?\d{2,4}-\d{3,4}-\d{4}(?!\d)")
def _phone(m: re.Match[str]) -> str:
    groups = re.findall(r"\d+", m.group(0))
    return ", ".join("".join("공" if d == 0 else _SINO_DIGITS[d] for d in digits(group)) for group in groups)


@RULES.add("range", r"(?<=\d)\s?[~～-]\s?(?=[$€£¥₩]?\d)")
def _range(m: re.Match[str]) -> str:
    return "에서 "


@RULES.add("currency", rf"(?P<sym>[$€£¥₩])\s?(?P<n>{NUMBER})")
def _currency_sign(m: re.Match[str]) -> str:
    return _amount(m["n"], _CURRENCIES[m["sym"]])


@RULES.add("currency", rf"(?P<n>{NUMBER})\s?(?P<word>{'|'.join(_CURRENCY_WORDS)})")
def _currency_word(m: re.Match[str]) -> str:
    return _amount(m["n"], _CURRENCY_WORDS[m["word"]])


@RULES.add("percentage", rf"(?P<n>-?(?:{NUMBER}))\s?(?P<sign>[%‰])")
def _percent(m: re.Match[str]) -> str:
    sign = "마이너스 " if m["n"].startswith("-") else ""
    return f"{sign}{sino(m['n'].lstrip('-'))} {_SYMBOLS[m['sign']]}"


_UNIT = "|".join(re.escape(u) for u in sorted(_UNITS, key=len, reverse=True))


@RULES.add("measure", rf"(?P<n>-?(?:{NUMBER}))\s?(?P<unit>{_UNIT})(?![a-zA-Z²])")
def _measure(m: re.Match[str]) -> str:
    sign = "영하 " if m["unit"] in ("°C", "℃", "°") else "마이너스 "
    sign = sign if m["n"].startswith("-") else ""
    return f"{sign}{sino(m['n'].lstrip('-'))} {_UNITS[m['unit']]}"


@RULES.add("ordinal", r"(?<![\d.])(?P<n>\d+)\s?번째")
def _ordinal(m: re.Match[str]) -> str:
    number = int(m["n"])
    return "첫 번째" if number == 1 else f"{native(number)} 번째"


@RULES.add("ordinal", r"제\s?(?P<n>\d+)")
def _ordinal_prefix(m: re.Match[str]) -> str:
    return f"제{sino(m['n'])}"


@RULES.add("native counter", rf"(?<![\d.])(?P<n>\d+)\s?(?P<counter>{'|'.join(_NATIVE_COUNTERS)})")
def _counter(m: re.Match[str]) -> str:
    return f"{native(int(m['n']))} {m['counter']}"


@RULES.add("number", rf"(?<![\w.])(?P<sign>[-−])?(?P<n>{NUMBER})|(?P<digits>\d+)")
def _number(m: re.Match[str]) -> str:
    number = m["n"] or m["digits"]
    if len(number) > 1 and number[0] == "0" and "." not in number:
        words = "".join("공" if d == 0 else _SINO_DIGITS[d] for d in digits(number))  # an identifier: "007"
    else:
        words = sino(number)
    return f"마이너스 {words}" if m["sign"] else words


RULES.add_words("symbol", _SYMBOLS)
