"""Synthetic recovery end to end (the same as ``tvb-torchfit demo``): TVB target, fit, write back, TVB validation.

Read ``tvb_torchfit/demo.py`` for the steps; each is a few lines of the public API
(``fit``, ``FitResult.apply``, ``validate``) that you can copy into your own script.

    python demos/fit_synthetic.py --out out/demo
"""
import sys

from tvb_torchfit.demo import main

if __name__ == "__main__":
    sys.exit(main())
