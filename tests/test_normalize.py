"""Normalizers: each kind of span per language against its spoken form, written by hand here.

The expected strings are how a reader says the text (checked against the language, not
produced by num2words or cn2an): a wrong library call or a missing rule fails them.
"""

from __future__ import annotations

import re

import pytest

from speech.text import TextError
from speech.text.normalize import spoken_language, to_spoken
from speech.text.validate import handle_unsayable, spoken_name

EN = {
    "cardinal": ("I have 3 apples and 42 pears.", "I have three apples and forty two pears."),
    "large cardinal": ("1,234,567 people", "one million two hundred and thirty four thousand five hundred and sixty seven people"),
    "negative": ("It was -7 outside.", "It was minus seven outside."),
    "ordinal": ("He came 1st, she came 22nd.", "He came first, she came twenty second."),
    "decimal": ("Pi is 3.14, not 3.50.", "Pi is three point one four, not three point five zero."),
    "year": ("Born in 1999.", "Born in nineteen ninety nine."),
    "decade": ("the 1990s", "the nineteen nineties"),
    "date": ("On Jan. 5, 2024 we met.", "On January fifth twenty twenty four we met."),
    "iso date": ("Due 2024-03-05.", "Due March fifth twenty twenty four."),
    "numeric date": ("Due 12/25/2023.", "Due December twenty fifth twenty twenty three."),
    "day month": ("5 March 2021", "the fifth of March twenty twenty one"),
    "time": ("Meet at 3:30 pm.", "Meet at three thirty p m."),
    "time oh": ("at 7:05", "at seven oh five"),
    "time o'clock": ("at 10:00", "at ten o'clock"),
    "currency": ("It costs $12.50.", "It costs twelve dollars fifty cents."),
    "currency whole": ("Only $1 or €5.", "Only one dollar or five euro."),
    "currency scale": ("a $5 million deal", "a five million dollars deal"),
    "pounds": ("£3.20", "three pounds sterling twenty pence"),
    "percentage": ("Up 15% today.", "Up fifteen percent today."),
    "unit": ("3 kg of rice, 1 km away", "three kilograms of rice, one kilometer away"),
    "temperature": ("It is 20°C.", "It is twenty degrees Celsius."),
    "speed unit": ("100 km/h", "one hundred kilometers per hour"),
    "range": ("5-10 kg", "five to ten kilograms"),
    "phone": ("Call 555-1234.", "Call five five five, one two three four."),
    "phone long": ("Call (555) 123-4567.", "Call five five five, one two three, four five six seven."),
    "identifier": ("Agent 007", "Agent zero zero seven"),
    "abbreviation": ("Dr. Smith met Mr. Jones.", "Doctor Smith met Mister Jones."),
    "abbreviation latin": ("fruit, e.g. apples, etc.", "fruit, for example apples, et cetera"),
    "number sign": ("Room No. 7", "Room number seven"),
    "symbols": ("salt & pepper", "salt and pepper"),
    "web": ("See https://www.example.com/docs today", "See www dot example dot com slash docs today"),
    "email": ("Mail a.b@example.org now", "Mail a dot b at example dot org now"),
    "letters and digits": ("an MP3 file", "an MP three file"),
}

KO = {
    "sino cardinal": ("12,500원", "만 이천오백 원"),
    "native counter": ("사과 3개에", "사과 세 개에"),
    "native twenty": ("학생 20명", "학생 스무 명"),
    "native compound": ("21살", "스물한 살"),
    "counter from 100": ("100개", "백 개"),
    "date": ("2024년 3월 5일", "이천이십사년 삼월 오일"),
    "special months": ("6월 10일", "유월 십일"),
    "iso date": ("2024-10-09", "이천이십사년 시월 구일"),
    "hour native": ("오후 3시 30분", "오후 세 시 삼십 분"),
    "clock": ("15:30", "열다섯 시 삼십 분"),
    "ordinal": ("1번째, 2번째", "첫 번째, 두 번째"),
    "ordinal prefix": ("제3회", "제삼회"),
    "decimal": ("3.14", "삼 점 일사"),
    "percentage": ("15% 할인", "십오 퍼센트 할인"),
    "currency sign": ("$12.50", "십이달러 오십센트"),
    "unit": ("5km", "오 킬로미터"),
    "temperature": ("-5°C", "영하 오 도"),
    "phone": ("010-1234-5678로", "공일공, 일이삼사, 오육칠팔로"),
    "range": ("3~5개", "삼에서 다섯 개"),
    "negative": ("-3", "마이너스 삼"),
    "identifier": ("007", "공공칠"),
    "mixed script": ("iPhone 15를 샀다", "iPhone 십오를 샀다"),
}

ZH = {
    "cardinal": ("共有1,234人", "共有一千二百三十四人"),
    "liang": ("2个苹果", "两个苹果"),
    "decimal": ("2.5公里", "二点五公里"),
    "year and date": ("2024年3月5日", "二零二四年三月五日"),
    "iso date": ("2024-03-05", "二零二四年三月五日"),
    "time": ("下午3:30", "下午三点三十分"),
    "time zero minutes": ("10:05和8:00", "十点零五分和八点整"),
    "currency": ("¥12.5", "十二点五元"),
    "dollars": ("$100", "一百美元"),
    "percentage": ("涨了15%", "涨了百分之十五"),
    "fraction": ("1/3的人", "三分之一的人"),
    "unit": ("3kg", "三公斤"),
    "temperature": ("-5℃", "零下五摄氏度"),
    "mobile": ("电话13812345678", "电话幺三八幺二三四五六七八"),
    "range": ("3-5天", "三到五天"),
    "ordinal": ("第3名", "第三名"),
    "negative": ("-8", "负八"),
}


@pytest.mark.parametrize("language, text, spoken", [
    *(pytest.param("en", t, s, id=f"en-{k}") for k, (t, s) in EN.items()),
    *(pytest.param("ko", t, s, id=f"ko-{k}") for k, (t, s) in KO.items()),
    *(pytest.param("zh", t, s, id=f"zh-{k}") for k, (t, s) in ZH.items()),
])
def test_spoken_form(language, text, spoken):
    assert to_spoken(text, language) == spoken


def test_text_without_anything_to_read_is_unchanged():
    for text, language in (("Hello, world!", "en"), ("안녕하세요.", "ko"), ("你好，世界。", "zh"), ("Bonjour à tous", "fr")):
        assert to_spoken(text, language) == text


def test_other_languages_fail_naming_what_they_cannot_read():
    with pytest.raises(TextError, match=r"cannot read '4', '2', '%'.*language is 'fr'"):
        to_spoken("Il a 42 % de chances", "fr")
    with pytest.raises(TextError, match="language is 'ja'"):
        to_spoken("今日は3時です", None)  # kana: Japanese, which has no normalizer


def test_kept_spans_are_not_read():
    marker = re.compile(r"\[\w+\]")
    assert to_spoken("[speed_5]I have 3 apples[break_6] and 2[laugh_0].", "en", keep=marker) == (
        "[speed_5] I have three apples [break_6] and two [laugh_0] .")
    assert to_spoken("[oral_2]", "en", keep=marker) == "[oral_2]"


def test_language_codes_and_script_detection():
    assert [spoken_language(code, "") for code in ("en-US", "kor", "cmn", "zh_CN", "FR")] == ["en", "ko", "zh", "zh", "fr"]
    assert spoken_language(None, "사과 3개 apple") == "ko"
    assert spoken_language(None, "价格是12元") == "zh"
    assert spoken_language(None, "42") == "en"
    assert spoken_language(None, "I ate 3 bowls of 拉面 in Tokyo") == "en"  # six Latin words, two Han characters
    assert spoken_language(None, "我用iPhone 31拍照") == "zh"
    assert to_spoken("사과 3개", None) == "사과 세 개"


def test_unknown_characters_dropped_or_spelled():
    ascii_only = str.isascii
    assert handle_unsayable("café ж 9", ["é", "ж", "9"], "drop", ascii_only) == "caf"
    assert spoken_name("é", ascii_only) == "e"
    assert spoken_name("ж", ascii_only) == "cyrillic zhe"
    assert spoken_name("9", ascii_only) == "nine"
    assert spoken_name("你", ascii_only) == ""  # no spoken name in letters the model knows: dropped
    assert handle_unsayable("a ж [uv_break] 你", ["ж", "你"], "spell", ascii_only) == "a cyrillic zhe [uv_break]"
