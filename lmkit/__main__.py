"""`python -m lmkit ...` is the `lmkit` command; torchrun starts its processes this way
(`torchrun --nproc-per-node 4 -m lmkit train ...`)."""

from .cli import main

if __name__ == "__main__":
    main()
