"""Blind noise estimation: how much noise an image holds and how it is correlated, measured in the image
itself (flat patches, the MR background, the autocorrelation of the noise), with the robust statistics it rests
on. :func:`~.noise_estimation.estimate_noise` is the entry point; the Denoiser, the Slicer panel, training and
the benchmarks use it."""
