"""Lumiere: a Space-Time U-Net text-to-video diffusion model (Bar-Tal et al., 2024)."""

__version__ = "0.1.0"
