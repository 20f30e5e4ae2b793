"""Training code for vlmguard: data synthesis, fine-tuning and evaluation (needs PyTorch)."""
