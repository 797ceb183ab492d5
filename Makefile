# The two commands of the README. Both set up .venv first (idempotent).
PY := .venv/bin/python
FIXTURES := .cache/fixtures

.PHONY: setup demo test

setup: .venv/.installed

.venv/.installed: pyproject.toml
	# torchcodec (audio in Hugging Face datasets) needs FFmpeg's shared libraries.
	command -v ffmpeg >/dev/null || (apt-get update -qq && apt-get install -y -qq ffmpeg >/dev/null)
	python3.11 -m venv .venv
	# pip reads this machine's local wheel copies; torch 2.14.1 comes from there.
	.venv/bin/pip install -q -e '.[test,real]'
	touch $@

# Transcribe the bundled sample corpus with a tiny offline checkpoint.
demo: setup
	.venv/bin/speech fixtures $(FIXTURES)
	.venv/bin/speech transcribe samples/manifest.jsonl -o out/demo --overwrite --model $(FIXTURES)/ctc-xlsr
	$(PY) -c "import pyarrow.parquet as pq; print(pq.read_table('out/demo').select(['id','duration_s','text','confidence','error']).to_pandas().to_string())"

test: setup
	$(PY) -m pytest -q
