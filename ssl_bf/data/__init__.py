"""Data sets, augmentation and the training order."""
