"""Training and fine-tuning scripts for MedicalDenoise models. They import MedicalDenoiseLib, never copy it."""
