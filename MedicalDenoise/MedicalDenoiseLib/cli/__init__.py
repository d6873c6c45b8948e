"""The ``medical-denoise`` command line."""
