"""Measuring denoisers: image-quality metrics, classical baselines and comparison figures. Only the
benchmarks, ``medical-denoise evaluate`` and ``demo`` need it (it imports scikit-image)."""
