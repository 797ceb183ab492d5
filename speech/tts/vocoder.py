"""Vocos as the mel -> waveform vocoder, batched without letting clips leak into each other.

Upstream batched decoding pads every mel to the longest and returns every clip at the
padded length (2noise/ChatTTS#813): short clips carry their neighbours' padding as noise.
Cutting the output back is not enough either: the backbone's depthwise convolutions look
3 frames to each side, so near its end a clip's samples see the padding frames' activations
instead of the zeros a single decode sees. Here every clip keeps exactly its single-decode
result: padding frames are zeroed before each convolution (so they look like the
convolution's own zero padding), and the inverse STFT, whose overlap-add normalization
depends on the frame count, runs per clip on its own frames.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch


class VocosVocoder:
    """Mel spectrograms -> waveforms with a Vocos (mel features, ``VocosBackbone``, ``ISTFTHead``)."""

    def __init__(self, vocos, device: str | torch.device = "cpu"):
        from vocos.heads import ISTFTHead
        from vocos.models import VocosBackbone

        backbone, head = vocos.backbone, vocos.head
        if not isinstance(backbone, VocosBackbone) or backbone.adanorm or not isinstance(head, ISTFTHead):
            raise ValueError("only mel Vocos models (VocosBackbone without AdaLayerNorm, ISTFTHead) are supported")
        self.vocos = vocos.to(device).eval()
        self.device = torch.device(device)
        features = vocos.feature_extractor.mel_spec
        self.sample_rate = int(features.sample_rate)
        self.n_mels = int(features.n_mels)
        self.hop_length = int(head.istft.hop_length)

    @classmethod
    def from_directory(cls, path: str | Path, device: str = "cpu") -> VocosVocoder:
        """Load a checkpoint in the hub layout of charactr/vocos-mel-24khz (config.yaml + pytorch_model.bin)."""
        from vocos import Vocos

        path = Path(path)
        vocos = Vocos.from_hparams(str(path / "config.yaml"))
        vocos.load_state_dict(torch.load(path / "pytorch_model.bin", map_location="cpu", weights_only=True))
        return cls(vocos, device)

    def num_samples(self, frames: int) -> int:
        """Waveform length of ``frames`` mel frames (centered ISTFT: one hop per frame gap)."""
        return self.hop_length * (frames - 1)

    @torch.inference_mode()
    def decode(self, mels: Sequence[torch.Tensor]) -> list[np.ndarray]:
        """Decode mels ``[n_mels, frames_i]`` together; returns float32 ``[num_samples(frames_i)]`` each.

        Each result equals decoding that mel alone (up to float rounding).
        """
        if not mels:
            return []
        lengths = torch.tensor([m.shape[-1] for m in mels], device=self.device)
        batch = torch.zeros(len(mels), self.n_mels, int(lengths.max()), device=self.device)
        for row, mel in zip(batch, mels):
            row[:, : mel.shape[-1]] = mel.to(self.device, torch.float32)
        mask = (torch.arange(batch.shape[-1], device=self.device)[None, :] < lengths[:, None])[:, None, :]
        hidden = self._backbone(batch, mask.float())  # [batch, frames, dim]
        head = self.vocos.head
        spectra = head.out(hidden).transpose(1, 2)  # [batch, n_fft + 2, frames]
        waveforms = []
        for spectrum, frames in zip(spectra, lengths.tolist()):
            mag, phase = spectrum[:, :frames].chunk(2, dim=0)
            # As ISTFTHead.forward: magnitudes are exp'd and clipped, phases wrapped via cos/sin.
            complex_spectrum = torch.clip(torch.exp(mag), max=1e2) * (torch.cos(phase) + 1j * torch.sin(phase))
            waveforms.append(head.istft(complex_spectrum[None])[0].float().cpu().numpy())
        return waveforms

    def _backbone(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``VocosBackbone.forward`` with padding frames zeroed before every convolution.

        ``x``: ``[batch, n_mels, frames]`` (zeros past each length); ``mask``: ``[batch, 1, frames]``.
        LayerNorms and the pointwise layers act per frame, so only the convolutions need it.
        """
        backbone = self.vocos.backbone
        x = backbone.embed(x)
        x = backbone.norm(x.transpose(1, 2)).transpose(1, 2)
        for block in backbone.convnext:
            x = block(x * mask)
        return backbone.final_layer_norm(x.transpose(1, 2))
