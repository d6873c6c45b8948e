"""Denoising a volume with a trained network: device choice, intensity normalisation, blind noise
estimation and tiled inference, joined by :class:`~.denoiser.Denoiser`."""
