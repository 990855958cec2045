"""``torch.compile`` for the twin's block functions, with a permanent eager fallback.

A compiled block needs a C++ compiler on CPU; one that is missing, or that crashes on the generated code
(seen with g++ 12 on some block lengths), must not stop a simulation: ``CompiledOrEager`` then runs the
same function eagerly for good, after one warning.
"""
import warnings
from typing import Callable, Dict, Optional, Tuple, Type

import torch

#: inductor options of ``compile=True`` on CPU: the compiled call's wrapper (buffer allocation, argument
#: checks) in C++ instead of Python, a large part of a block's cost at small batch
CPU_COMPILE_OPTIONS = {"cpp_wrapper": True}


def compile_options(device: torch.device) -> Optional[Dict]:
    """The inductor options the twin compiles with on ``device`` (``CPU_COMPILE_OPTIONS`` on CPU, else none)."""
    return dict(CPU_COMPILE_OPTIONS) if device.type == "cpu" else None


def compile_errors() -> Tuple[Type[BaseException], ...]:
    """The exceptions that mean "this function could not be compiled" (a backend or C++ compiler failure)."""
    errors = []
    try:
        from torch._dynamo.exc import BackendCompilerFailed
        errors.append(BackendCompilerFailed)
    except ImportError:
        pass
    try:
        from torch._inductor.exc import CppCompileError
        errors.append(CppCompileError)
    except ImportError:
        pass
    return tuple(errors) or (RuntimeError,)


COMPILE_ERRORS = compile_errors()


class CompiledOrEager:
    """``torch.compile(fn)``, falling back to ``fn`` itself for good if compilation fails, with a warning.

    ``fn`` the eager function, ``compiled`` its compiled form (call it directly to time the compiled code
    alone), ``error`` the compilation error after a fallback (None while compiled code runs).
    """

    def __init__(self, fn: Callable, options: Optional[Dict] = None):
        self.fn = fn

        def call(*args):
            return fn(*args)
        # A code object of its own: dynamo keeps compiled graphs, and counts recompilations against its limit
        # (8), per code object; torch.compile of a functools.partial would share one wrapper code object
        # between every simulator of the process and silently run eagerly once 8 variants (dtype, batch,
        # thread count, forward / backward ...) exist. Per instance, recompilations stay few.
        call.__code__ = call.__code__.replace()
        self.compiled = torch.compile(call, dynamic=False, options=options)
        self.error: Optional[BaseException] = None

    def __call__(self, *args):
        if self.error is None:
            try:
                return self.compiled(*args)
            except COMPILE_ERRORS as err:
                self.error = err
                first = str(err).strip().splitlines()[0][:200] if str(err).strip() else ""
                warnings.warn(f"tvb_torchfit: torch.compile failed ({type(err).__name__}: {first}); "
                              "these blocks run eagerly from now on.", RuntimeWarning, stacklevel=2)
        return self.fn(*args)
