"""Kokoro on onnxruntime: a directory written by ``speech convert onnx KOKORO_DIR OUT_DIR``.

The same front end as the PyTorch backend (:class:`speech.tts.kokoro.KokoroFrontEnd`: the
directory keeps ``config.json`` and ``voices/``), and the same model contract: one utterance
per forward pass, the decoder's noise seeded with the utterance's seed. The network runs as
three onnxruntime sessions; between them the host builds the token alignment, draws the
harmonic source's noise from torch's generator exactly as ``KModel`` draws it, and runs
``torch.stft``/``torch.istft`` as Kokoro's decoder does (see :mod:`speech.convert.onnx_kokoro`
for why), so the audio equals the PyTorch backend's within float tolerance.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from speech.onnx_model import OnnxModelError, check_graphs, read_manifest, session
from speech.tts.base import Utterance
from speech.tts.kokoro import SAMPLE_RATE, VoicePacks, _vocab

#: Graph names in the manifest (written by speech.convert.onnx_kokoro).
TEXT, SOURCE, DECODER = "text", "source", "decoder"
_HARMONICS = 9  # Kokoro's harmonic source: the fundamental and 8 overtones


class KokoroOnnxTts:
    """Exported ``KModel`` in onnxruntime sessions; one utterance per forward pass."""

    backend = "kokoro"
    engine = "onnxruntime"
    sample_rate = SAMPLE_RATE

    def __init__(self, model: str, *, device: str = "cpu"):
        from kokoro.istftnet import TorchSTFT

        manifest = read_manifest(model)
        if manifest.kind != "kokoro" or set(manifest.graphs) != {TEXT, SOURCE, DECODER}:
            raise OnnxModelError(f"ONNX model {model} is a {manifest.kind} export, not Kokoro")
        check_graphs(model, manifest)
        threads = torch.get_num_threads()  # the model actor's torch_threads
        self.sessions = {
            name: session(Path(model) / graph.file, threads=threads, device=device) for name, graph in manifest.graphs.items()
        }
        self.samples_per_frame = int(manifest.details["samples_per_frame"])
        stft = manifest.details["stft"]
        self.stft = TorchSTFT(filter_length=stft["n_fft"], hop_length=stft["hop"], win_length=stft["win"])
        self.vocab, _ = _vocab(model)
        self.packs = VoicePacks(model)

    def synthesize(self, utterances: Sequence[Utterance]) -> list[np.ndarray]:
        """Waveforms at 24 kHz, float32 ``[samples]``, one per utterance (see the module docstring)."""
        waveforms = []
        for utterance in utterances:
            style = self.packs.style(utterance.voice, len(utterance.inputs))
            speed = 1.0 if utterance.speed is None else utterance.speed
            waveforms.append(self.synthesize_phonemes(utterance.inputs, style, seed=utterance.seed, speed=speed))
        return waveforms

    def synthesize_phonemes(self, phonemes: str, style: torch.Tensor, *, seed: int, speed: float = 1.0) -> np.ndarray:
        """One utterance: ``phonemes`` (Kokoro's alphabet), ``style`` ``[1, 256]``, ``speed`` (1.0
        normal) -> float32 ``[samples]``."""
        ids = np.array([[0, *[self.vocab[p] for p in phonemes if p in self.vocab], 0]], np.int64)
        style_np = style.float().numpy().reshape(1, -1)
        durations, d, t_en = self.sessions[TEXT].run(
            None, {"input_ids": ids, "style": style_np, "speed": np.array([speed], np.float32)}
        )
        alignment = alignment_matrix(durations)
        phase_noise, sine_noise = self._noise(int(durations.sum()), seed)
        f0, n, harmonic = self.sessions[SOURCE].run(
            None, {"d": d, "alignment": alignment, "style": style_np, "phase_noise": phase_noise, "sine_noise": sine_noise}
        )
        with torch.no_grad():
            spec, phase = self.stft.transform(torch.from_numpy(harmonic))
        out_spec, out_phase = self.sessions[DECODER].run(
            None,
            {"t_en": t_en, "alignment": alignment, "f0": f0, "n": n, "style": style_np,
             "harmonic_spec": spec.numpy(), "harmonic_phase": phase.numpy()},
        )
        with torch.no_grad():
            audio = self.stft.inverse(torch.from_numpy(out_spec), torch.from_numpy(out_phase))
        return audio.float().numpy().reshape(-1)

    def _noise(self, frames: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """The harmonic source's two draws as ``KModel`` makes them after ``manual_seed(seed)``:
        ``rand(1, 9)``, then ``randn_like`` of its ``[1, L, 9]`` sine waves, which are a
        transposed view of ``[1, 9, L]`` memory (so the values fill that layout)."""
        samples = frames * self.samples_per_frame
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            phase = torch.rand(1, _HARMONICS)
            sine = torch.randn_like(torch.empty(1, _HARMONICS, samples).transpose(1, 2))
        return phase.numpy(), sine.contiguous().numpy().reshape(1, frames, self.samples_per_frame, _HARMONICS)



def alignment_matrix(durations: np.ndarray) -> np.ndarray:
    """Token -> frame alignment, float32 ``[1, tokens, frames]``: token ``i`` holds ``durations[i]``
    consecutive frames (what ``KModel.forward_with_tokens`` builds with ``repeat_interleave``)."""
    tokens, frames = len(durations), int(durations.sum())
    alignment = np.zeros((1, tokens, frames), np.float32)
    alignment[0, np.repeat(np.arange(tokens), durations), np.arange(frames)] = 1.0
    return alignment
