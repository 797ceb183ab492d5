"""Export a Kokoro checkpoint (``KModel`` + its istftnet decoder) to ONNX, in three graphs.

Kokoro-82M's own ``examples/export.py`` exports ``KModel.forward_with_tokens`` as one graph with
the TorchScript exporter and the real-valued ``CustomSTFT``. That graph cannot give the
PyTorch backend's audio: ``CustomSTFT`` approximates ``torch.stft``/``istft`` (replicate
padding, no window normalization), and the decoder's harmonic source draws its noise inside
the graph. Here the audio equals the PyTorch backend's (same phonemes, voice, speed, seed)
within float tolerance, so the work is cut where the host must act:

1. ``text.onnx`` (``input_ids`` [1, tokens], ``style`` [1, 256], ``speed`` [1]) -> ``durations``
   [tokens] (frames per token, int64), ``d`` [1, tokens, C] and ``t_en`` [1, H, tokens];
2. the host builds the token -> frame alignment [1, tokens, frames] and draws the harmonic
   source's noise from torch's generator, seeded as the PyTorch backend seeds it, in the same
   order and memory layout (``torch.rand`` [1, 9], then ``torch.randn_like`` of a [1, L, 9]
   view of a [1, 9, L] tensor; L = frames x ``samples_per_frame``);
3. ``source.onnx`` (``d``, ``alignment``, ``style``, ``phase_noise`` [1, 9], ``sine_noise``
   [1, frames, samples_per_frame, 9]) -> ``f0``, ``n`` [1, 2 frames] and ``harmonic``
   [1, L], the harmonic source waveform;
4. the host runs ``torch.stft`` on it (Kokoro's ``TorchSTFT.transform``): the phase of a frame
   whose spectrum is real (the first frame always is) is +-pi by float rounding, and only the
   same FFT code gives the same sign;
5. ``decoder.onnx`` (``t_en``, ``alignment``, ``f0``, ``n``, ``style``, ``harmonic_spec``,
   ``harmonic_phase``) -> the generator's ``spec`` and ``phase``;
6. the host runs ``torch.istft`` (``TorchSTFT.inverse``) for the waveform.

For export, Kokoro's own modules are traced with three substitutions, each scoped to the
export: packed sequences are identities (one utterance, no padding), the two noise draws
return graph inputs, and the generator's source and STFT become graph inputs and outputs.
"""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from speech.convert.onnx_export import EXPORTER, ConvertError, export_graph, versions
from speech.onnx_model import GraphSpec, Manifest
from speech.tts.kokoro import SAMPLE_RATE
from speech.tts.kokoro_onnx import KokoroOnnxTts, alignment_matrix

#: Graph names (manifest keys) and files.
TEXT, SOURCE, DECODER = "text", "source", "decoder"
_FILES = {TEXT: "text.onnx", SOURCE: "source.onnx", DECODER: "decoder.onnx"}
#: The probe the export is checked with (phonemes the test fixture's vocabulary has).
_PROBE = "həlˈoʊ wˈɜːld, ðɪs ɪz ə tˈɛst."
#: The first STFT frame of the harmonic source has a real spectrum, so its phase is +-pi by
#: the sign of a ~1e-8 rounding residue: PyTorch itself, given its harmonic source perturbed
#: by 4e-8, gives audio up to 0.2 different there (peak ~2), and its instance norms carry up
#: to ~0.007 of that everywhere. Outside that frame's reach (the first 30 ms) the check allows
#: that much; without a flip the two agree to ~5e-6.
FIRST_FRAME_REACH_S = 0.03
_MAX_DIFF_AFTER_FIRST_FRAME = 0.05


class _Text(torch.nn.Module):
    """``KModel.forward_with_tokens`` up to the durations, for one utterance."""

    def __init__(self, kmodel):
        super().__init__()
        self.k = kmodel

    def forward(self, input_ids: torch.Tensor, style: torch.Tensor, speed: torch.Tensor):
        k, tokens = self.k, input_ids.shape[1]
        lengths = torch.full((1,), tokens, dtype=torch.long)
        mask = torch.zeros((1, tokens), dtype=torch.bool)  # one utterance: nothing is padding
        bert = k.bert(input_ids, attention_mask=(~mask).int())
        d_en = k.bert_encoder(bert).transpose(-1, -2)
        d = k.predictor.text_encoder(d_en, style[:, 128:], lengths, mask)
        x, _ = k.predictor.lstm(d)
        duration = torch.sigmoid(k.predictor.duration_proj(x)).sum(axis=-1) / speed
        durations = torch.round(duration).clamp(min=1).long().squeeze(0)
        return durations, d, k.text_encoder(input_ids, lengths, mask)


class _Source(torch.nn.Module):
    """Prosody (F0, energy) over the frames, and the decoder's harmonic source waveform."""

    def __init__(self, kmodel):
        super().__init__()
        self.k = kmodel

    def forward(self, d, alignment, style, phase_noise, sine_noise):
        k = self.k
        f0, n = k.predictor.F0Ntrain(d.transpose(-1, -2) @ alignment, style[:, 128:])
        generator = k.decoder.generator
        upsampled = generator.f0_upsamp(f0[:, None]).transpose(1, 2)
        with _injected_noise(phase_noise, sine_noise):
            harmonic, _, _ = generator.m_source(upsampled)
        return f0, n, harmonic.transpose(1, 2).squeeze(1)


class _Decoder(torch.nn.Module):
    """The decoder and generator, from the harmonic source's spectrum to the output spectrum."""

    def __init__(self, kmodel):
        super().__init__()
        self.k = kmodel

    def forward(self, t_en, alignment, f0, n, style, harmonic_spec, harmonic_phase):
        generator = self.k.decoder.generator
        with _generator_io(generator, harmonic_spec, harmonic_phase):
            return self.k.decoder(t_en @ alignment, f0, n, style[:, :128])


def convert_kokoro(model: str, out: Path) -> Manifest:
    """Export Kokoro checkpoint directory ``model`` into the (empty) directory ``out``."""
    from kokoro import KModel

    weights = sorted(Path(model).glob("*.pth"))
    if len(weights) != 1:
        raise ConvertError(f"expected one *.pth weights file in {model}, found {len(weights)}")
    kmodel = KModel(repo_id="hexgrad/Kokoro-82M", config=str(Path(model) / "config.json"), model=str(weights[0])).eval()
    generator = kmodel.decoder.generator
    if type(generator.stft).__name__ != "TorchSTFT":
        raise ConvertError("the Kokoro decoder must use torch.stft (KModel built with disable_complex=False)")
    per_frame = _samples_per_frame(kmodel)
    shutil.copy2(Path(model) / "config.json", out / "config.json")
    shutil.copytree(Path(model) / "voices", out / "voices")

    # Example inputs: the probe's tokens, a voice's style, and noise sized from its frames.
    ids = torch.tensor([[0, *[kmodel.vocab[p] for p in _PROBE if p in kmodel.vocab], 0]])
    style = torch.randn(1, 256, generator=torch.Generator().manual_seed(0)) * 0.1
    speed = torch.ones(1)
    graphs: dict[str, GraphSpec] = {}
    with _one_utterance_rnn():
        graphs[TEXT], opset = _export(
            out, TEXT, _Text(kmodel), (ids, style, speed), ["input_ids", "style", "speed"], ["durations", "d", "t_en"],
            {"input_ids": {1: "tokens"}},
        )
        with torch.no_grad():
            durations, d, t_en = _Text(kmodel)(ids, style, speed)
    alignment = torch.from_numpy(alignment_matrix(durations.numpy()))
    sine_noise = torch.randn(1, int(durations.sum()), per_frame, 9)
    source_inputs = (d, alignment, style, torch.rand(1, 9), sine_noise)
    graphs[SOURCE], _ = _export(
        out, SOURCE, _Source(kmodel), source_inputs, ["d", "alignment", "style", "phase_noise", "sine_noise"],
        ["f0", "n", "harmonic"], {"d": {1: "tokens"}, "alignment": {1: "tokens", 2: "frames"}, "sine_noise": {1: "frames"}},
    )
    with torch.no_grad():
        f0, n, harmonic = _Source(kmodel)(*source_inputs)
        spec, phase = generator.stft.transform(harmonic)
    graphs[DECODER], _ = _export(
        out, DECODER, _Decoder(kmodel), (t_en, alignment, f0, n, style, spec, phase),
        ["t_en", "alignment", "f0", "n", "style", "harmonic_spec", "harmonic_phase"], ["spec", "phase"],
        {"t_en": {2: "tokens"}, "alignment": {1: "tokens", 2: "frames"}, "f0": {1: "f0_frames"}, "n": {1: "f0_frames"},
         "harmonic_spec": {2: "stft_frames"}, "harmonic_phase": {2: "stft_frames"}},
    )
    stft = generator.stft
    manifest = Manifest(
        kind="kokoro",
        source_model=str(model),
        architecture="KModel",
        graphs=graphs,
        opset=opset,
        quantization=None,
        exporter=EXPORTER,
        versions=versions(),
        details={
            "samples_per_frame": per_frame,
            "stft": {"n_fft": stft.filter_length, "hop": stft.hop_length, "win": stft.win_length},
            "parameters": sum(p.numel() for p in kmodel.parameters()),
        },
    )
    manifest = _verified(manifest, out, kmodel)
    manifest.write(out)
    return manifest


def _export(out: Path, name: str, module, args, input_names, output_names, axes) -> tuple[GraphSpec, int]:
    inputs, outputs, opset = export_graph(
        module, args, out / _FILES[name], input_names=input_names, output_names=output_names, axes=axes
    )
    return GraphSpec(_FILES[name], inputs, outputs), opset


def _samples_per_frame(kmodel) -> int:
    """Harmonic-source samples per alignment frame: F0 runs at twice the frame rate (the
    prosody predictor upsamples by 2) and the generator upsamples it to audio samples."""
    scale = kmodel.decoder.generator.f0_upsamp.scale_factor
    return int(2 * round(float(scale)))


def _verified(manifest: Manifest, out: Path, kmodel) -> Manifest:
    """The manifest with the export's check against PyTorch: one utterance synthesized by both
    backends with the same phonemes, voice pack, speed and seed."""
    manifest.write(out)  # the engine reads it
    voice = sorted((out / "voices").glob("*.pt"))[0]
    style = torch.load(voice, map_location="cpu", weights_only=True)[len(_PROBE) - 1]
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(0)
        want = kmodel(_PROBE, style, 1.0).float().numpy().reshape(-1)
    got = KokoroOnnxTts(str(out)).synthesize_phonemes(_PROBE, style, seed=0)
    if len(got) != len(want):
        raise ConvertError(f"the ONNX export gives {len(got)} samples where PyTorch gives {len(want)}")
    diff = np.abs(got - want)
    reach = int(FIRST_FRAME_REACH_S * SAMPLE_RATE)
    later = float(diff[reach:].max(initial=0.0))
    if later > _MAX_DIFF_AFTER_FIRST_FRAME:
        raise ConvertError(
            f"the ONNX export's audio differs from PyTorch's by up to {later:.3g} after the first "
            f"{FIRST_FRAME_REACH_S * 1000:g} ms (limit {_MAX_DIFF_AFTER_FIRST_FRAME})"
        )
    figures = {"max_abs_diff": round(float(diff.max()), 7), "max_abs_diff_after_30ms": round(later, 7),
               "samples": len(want), "peak": round(float(np.abs(want).max()), 4)}
    return Manifest(**{**manifest.__dict__, "verification": {"float32": figures}})


@contextlib.contextmanager
def _one_utterance_rnn() -> Iterator[None]:
    """Packing a batch of one full-length sequence changes nothing: let the LSTMs see the tensor
    (torch.export cannot trace packed sequences)."""
    rnn = torch.nn.utils.rnn
    pack, unpack = rnn.pack_padded_sequence, rnn.pad_packed_sequence
    rnn.pack_padded_sequence = lambda x, lengths, batch_first=False, enforce_sorted=True: x
    rnn.pad_packed_sequence = lambda x, batch_first=False, **_: (x, None)
    try:
        yield
    finally:
        rnn.pack_padded_sequence, rnn.pad_packed_sequence = pack, unpack


@contextlib.contextmanager
def _injected_noise(phase_noise: torch.Tensor, sine_noise: torch.Tensor) -> Iterator[None]:
    """The harmonic source's draws, in their order, become the given tensors: ``torch.rand``
    (initial phases) -> ``phase_noise``; the first ``torch.randn_like`` (additive noise)
    -> ``sine_noise`` as ``[1, L, 9]``; the second (a noise branch the generator never uses)
    -> zeros."""
    rand, randn_like = torch.rand, torch.randn_like
    drawn = []

    def fake_rand(*size, **kwargs):
        drawn.append("rand")
        return phase_noise.clone()

    def fake_randn_like(tensor, **kwargs):
        drawn.append("randn_like")
        return sine_noise.reshape(1, -1, sine_noise.shape[-1]) if len(drawn) == 2 else torch.zeros_like(tensor)

    torch.rand, torch.randn_like = fake_rand, fake_randn_like
    try:
        yield
    finally:
        torch.rand, torch.randn_like = rand, randn_like
    if drawn != ["rand", "randn_like", "randn_like"]:
        raise ConvertError(f"Kokoro's harmonic source drew {drawn}; this exporter knows rand, randn_like, randn_like")


class _GivenSpectrum(torch.nn.Module):
    """Stands in for the generator's STFT: ``transform`` returns the graph's harmonic spectrum
    inputs, ``inverse`` returns the spectrum it is given (the host runs the real ones)."""

    def __init__(self, spec: torch.Tensor, phase: torch.Tensor):
        super().__init__()
        self.spec, self.phase = spec, phase

    def transform(self, waveform: torch.Tensor):
        return self.spec, self.phase

    def inverse(self, spec: torch.Tensor, phase: torch.Tensor):
        return spec, phase


class _NoSource(torch.nn.Module):
    """Stands in for the harmonic source (computed by ``source.onnx``); its output goes unused."""

    def forward(self, f0: torch.Tensor):
        return f0, None, None


@contextlib.contextmanager
def _generator_io(generator, spec: torch.Tensor, phase: torch.Tensor) -> Iterator[None]:
    stft, source = generator.stft, generator.m_source
    generator.stft, generator.m_source = _GivenSpectrum(spec, phase), _NoSource()
    try:
        yield
    finally:
        generator.stft, generator.m_source = stft, source
