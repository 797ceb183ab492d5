"""``speech bench``: this project and its peers side by side, on one machine and the same weights.

Not part of the installed library (the ``bench`` extra: psutil, faster-whisper); it imports
``speech``, ``jobs`` and ``serve``, and nothing there imports it.

Modules: :mod:`~bench.harness` (what every benchmark shares: a system's job and its run in a
subprocess, with its peak memory), :mod:`~bench.checkpoint` (real-size random-weight models
built offline), :mod:`~bench.corpus` (generated log-normal corpus), :mod:`~bench.memory`
(peak memory of a process tree), :mod:`~bench.report` (machine facts, JSON),
:mod:`~bench.systems` (one function per ASR system, each run in its own subprocess),
:mod:`~bench.asr` (orchestration, table, JSON), :mod:`~bench.whisper` (the Whisper checkpoint,
its CTranslate2 copy and systems), :mod:`~bench.whisper_real` (real weights, word error rates),
:mod:`~bench.tts` / :mod:`~bench.tts_systems` (synthesis), :mod:`~bench.serve` /
:mod:`~bench.realtime` (the HTTP server and live transcription), :mod:`~bench.onnx_engine`.
"""
