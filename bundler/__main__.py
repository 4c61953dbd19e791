"""The process entry point (`airgap-bundle` and `python -m bundler`): start the command line.

Start-up allocates hundreds of thousands of objects that live as long as the process (modules, classes,
functions), and Python's cyclic garbage collector would walk them again and again while they are created
and once more at exit, only to find nothing to free: about a tenth of a warm `pull` (docs/performance.md
"Pull"). So collection is off while the command line is imported, what exists then is frozen out of the
collector's reach (`gc.freeze`), and at exit everything left is frozen too. The collector runs as usual
for the command's own work.
"""

from __future__ import annotations

import gc


def main() -> None:
    gc.disable()
    from .cli import main as run

    gc.freeze()
    gc.enable()
    try:
        run()
    finally:
        gc.freeze()  # the interpreter's final collection then skips them: nothing at exit needs it


if __name__ == "__main__":
    main()
