"""`python -m dhow_cli`: the `dhow` command without the installed script (how the tests
and the demo run it)."""

from dhow_cli import main

if __name__ == "__main__":
    main()
