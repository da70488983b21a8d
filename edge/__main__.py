"""``python -m edge INPUT [OUTPUT...] --bundle DIR``: the live captioner."""
from edge.live_cli import entry

if __name__ == "__main__":
    entry()
