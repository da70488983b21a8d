"""The captioner: backbone + fc/att decoder behind one step(), checkpoints, the searches, FLOPs."""
