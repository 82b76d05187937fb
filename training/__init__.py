"""Training: random-crop data pipeline and a resumable rate-distortion training loop."""
