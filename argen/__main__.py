"""`python -m argen ...` and `torchrun -m argen train ...` land here."""

from argen.cli import main

if __name__ == "__main__":
    main()
