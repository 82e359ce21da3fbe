"""Whether this install can run the P2L network in process: torch is the ``local`` extra.

A plain ``pip install p2l-router`` is a remote-scoring replica (``serve --scorer-url``: no
torch, no CUDA, an image of a few hundred MB). What loads or writes the network itself
(``serve`` without ``--scorer-url``, ``demo``, ``leaderboard``, ``simulate``,
``export-backbone``, ``tiny-checkpoint``) checks here before it starts, so a plain install
stops with a message naming the extra rather than a ``ModuleNotFoundError`` from deep
inside transformers. ``find_spec`` looks torch up without importing it.
"""

from __future__ import annotations

from importlib.util import find_spec

from router.scoring.types import ModelLoadError

LOCAL_EXTRA = "p2l-router[local]"


def has_local_scorer() -> bool:
    """True when torch is installed (the in-process scorer can load)."""
    return find_spec("torch") is not None


def require_local_scorer(what: str) -> None:
    """Raise ``ModelLoadError`` naming the extra when torch is not installed."""
    if not has_local_scorer():
        raise ModelLoadError(
            f"{what} runs the P2L model in this process and needs torch, which a plain "
            f"install leaves out: install the extra (pip install '{LOCAL_EXTRA}', from a "
            "checkout pip install '.[local]' or make install), or score on a remote engine "
            "with --scorer-url (README: 'Scaling out')"
        )
