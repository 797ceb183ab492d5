"""Model format converters written for this project (no hub, no third-party converter).

* ``speech convert onnx`` (:mod:`speech.convert.onnx_export`): CTC and Kokoro checkpoints to ONNX;
* :mod:`speech.convert.ct2_format` reads CTranslate2's binary ``model.bin``;
* :mod:`speech.convert.ct2_whisper` turns a CTranslate2 Whisper model into a transformers
  ``WhisperForConditionalGeneration`` checkpoint (the inverse of CTranslate2's own
  transformers converter).
"""
