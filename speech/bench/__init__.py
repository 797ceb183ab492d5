"""``speech bench``: this project and its peers side by side, on one machine and the same weights.

Modules: :mod:`~speech.bench.checkpoint` (real-size random-weight models built offline),
:mod:`~speech.bench.corpus` (generated log-normal corpus), :mod:`~speech.bench.memory`
(peak memory of a process tree), :mod:`~speech.bench.systems` (one function per system, each
run in its own subprocess), :mod:`~speech.bench.asr` (orchestration, table, JSON),
:mod:`~speech.bench.whisper` (the Whisper checkpoint, its CTranslate2 copy and systems).
"""
