"""Denoising a volume with a trained network: device choice, intensity normalisation, the noise grain and the
sub-lattices it asks for, and tiled inference, joined by :class:`~.denoiser.Denoiser` (the noise estimate itself is
:mod:`..estimation`)."""
