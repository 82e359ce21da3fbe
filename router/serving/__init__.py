"""Serving: one chat request from authentication to the settled spend, with no HTTP types.

Public surface: :class:`RouterService` (owns the resources; the app's lifespan starts and
closes it) and the results of a chat request (:class:`Answer`, :class:`StreamedAnswer`,
:class:`Refusal`). Modules: ``chat`` (the pipeline steps), ``streaming`` (a streamed
answer), ``planning`` (score → decide), ``accounting`` (periods, usage view, reserve /
settle / release, pacing state), ``generations`` (config reloads), ``tokens``.
"""

from __future__ import annotations

from router.serving.results import Answer, ChatResult, Refusal, StreamedAnswer
from router.serving.service import RouterService

__all__ = ["Answer", "ChatResult", "Refusal", "RouterService", "StreamedAnswer"]
