"""What training minimises: cross-entropy (label smoothing, attention regulariser) and self-critical sequence training with CIDEr-D."""
