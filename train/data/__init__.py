"""Training data: dataset readers, the synthetic sets, batches of images and captions, prepared image files, the feature cache, DataLoader settings."""
