"""``python -m zoo`` — the same CLI as ``zoo`` (torchrun launches it this way)."""
from zoo.cli import entry

if __name__ == "__main__":
    entry()
