"""`python -m objsearch` is the `objsearch` command."""

from objsearch.cli import main

main()
