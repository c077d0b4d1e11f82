"""Fine-tuning and evaluation: config, the fold loop over every model, the training loop."""
