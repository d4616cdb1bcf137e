"""Side-stream transforms: analysis ``g_a`` (encoder only) and synthesis ``g_s``.

    g_a: [x as pixel_unshuffle(s) ; x_lr_hat] at low resolution h x w
         --conv/2--conv/2--conv/2--> y [B, M, h/8, w/8]
    g_s: y_hat --(conv, pixel_shuffle 2) x 3--> s [B, C_s, h, w]

``g_a`` sees the decoded base frame ``x_lr_hat`` as well as the original ``x`` (the
encoder runs the decoder's loop), so the side stream can spend its bits on what the
base layer lost. ``g_s`` runs at the decoder and feeds the upsampler's kernel predictor.
"""

from __future__ import annotations

import torch
from torch import nn

from dualcodec.nets.common import Normalize, conv3x3

STRIDE = 8  # low-resolution pixels per latent sample, each direction


class SideAnalysis(nn.Module):
    def __init__(self, scale: int, latent_channels: int, width: int = 32) -> None:
        super().__init__()
        self.normalize = Normalize()
        self.unshuffle = nn.PixelUnshuffle(scale)
        c_in = 3 * scale * scale + 3
        self.body = nn.Sequential(
            conv3x3(c_in, width, stride=2),
            nn.LeakyReLU(0.1),
            conv3x3(width, width, stride=2),
            nn.LeakyReLU(0.1),
            conv3x3(width, width, stride=2),
            nn.LeakyReLU(0.1),
            conv3x3(width, latent_channels),
        )
        nn.init.zeros_(self.body[-1].weight)  # latents start at zero: no side bits until useful
        nn.init.zeros_(self.body[-1].bias)

    def forward(self, x: torch.Tensor, x_lr_hat: torch.Tensor) -> torch.Tensor:
        """``x`` ``[B,3,sh,sw]``, ``x_lr_hat`` ``[B,3,h,w]``: Y, Cb, Cr on the unit scale, h and w divisible by 8."""
        z = torch.cat([self.unshuffle(self.normalize(x)), self.normalize(x_lr_hat)], dim=1)
        return self.body(z)


class SideSynthesis(nn.Module):
    def __init__(self, latent_channels: int, out_channels: int, width: int = 32) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c = latent_channels
        for _ in range(3):
            layers += [conv3x3(c, width), nn.LeakyReLU(0.1), nn.PixelShuffle(2)]
            c = width // 4
        layers.append(conv3x3(c, out_channels))
        self.body = nn.Sequential(*layers)

    def forward(self, y_hat: torch.Tensor) -> torch.Tensor:
        """``y_hat`` ``[B,M,h/8,w/8]`` to side features ``[B,C_s,h,w]``."""
        return self.body(y_hat)
