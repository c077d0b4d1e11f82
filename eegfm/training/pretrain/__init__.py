"""Masked pretraining under Lightning: the module, the shard data module, callbacks."""
